"""The official Weaviate Python client v4 doing what `embatch replay` does, for bench/weaviate: read a result file,
decode each base64 embedding and add its objects to a batch, timed as a whole (wall clock and CPU of this process).

    python bench/weaviate_python.py <texts.jsonl> <results.jsonl> <collection> <mode> <host> <http_port> <grpc_port>

<texts.jsonl> holds, per custom_id, the objects a result line makes without their vector ({"custom_id": ...,
"objects": [{"uuid": ..., "properties": {...}}]}): what embatch reads from its state store. Loading it is timed too.
<mode> is fixed:<batch_size>x<concurrent_requests>, dynamic or stream. Prints one JSON line: objects, seconds,
cpu_seconds, failed.
"""
import base64
import json
import sys
import time

import numpy as np
import weaviate
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

texts_path, results_path, name, mode, host = sys.argv[1:6]
http_port, grpc_port = int(sys.argv[6]), int(sys.argv[7])
client = weaviate.connect_to_local(host=host, port=http_port, grpc_port=grpc_port)
try:
    if client.collections.exists(name):
        client.collections.delete(name)
    client.collections.create(
        name,
        properties=[
            Property(name="original_string", data_type=DataType.TEXT),
            Property(name="hash_value", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
            Property(name="field_type", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
            Property(name="frequency", data_type=DataType.INT),
        ],
        vector_config=Configure.Vectors.self_provided(name="default", vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)),
    )
    collection = client.collections.get(name)
    if mode.startswith("fixed:"):
        size, concurrency = (int(x) for x in mode[len("fixed:"):].split("x"))
        batcher = collection.batch.fixed_size(batch_size=size, concurrent_requests=concurrency)
    elif mode == "dynamic":
        batcher = collection.batch.dynamic()
    elif mode == "stream":
        batcher = collection.batch.stream()
    else:
        raise SystemExit(f"unknown mode {mode}")

    started, cpu_started = time.perf_counter(), time.process_time()
    texts = {}
    with open(texts_path, "r", encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            texts[entry["custom_id"]] = entry["objects"]
    n = 0
    with batcher as batch:
        with open(results_path, "r", encoding="utf-8") as f:
            for line in f:
                result = json.loads(line)
                embedding = result["response"]["body"]["data"][0]["embedding"]
                vector = np.frombuffer(base64.b64decode(embedding), dtype="<f4")
                for o in texts[result["custom_id"]]:
                    batch.add_object(properties=o["properties"], uuid=o["uuid"], vector={"default": vector})
                    n += 1
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"objects": n, "seconds": seconds, "cpu_seconds": cpu_seconds, "failed": len(collection.batch.failed_objects)}))
finally:
    client.close()
