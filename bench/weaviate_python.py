"""Insert the objects of an embatch JSONL sink file with the official Weaviate Python client v4, for bench/weaviate.

    python bench/weaviate_python.py <objects.jsonl> <collection> <fixed|dynamic> <http_port> <grpc_port>

Prints one JSON line: objects, seconds (reading, decoding and inserting), failed.
"""
import base64
import json
import sys
import time

import numpy as np
import weaviate
from weaviate.classes.config import Configure, DataType, Property, VectorDistances

path, name, mode, http_port, grpc_port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
client = weaviate.connect_to_local(port=http_port, grpc_port=grpc_port)
try:
    if client.collections.exists(name):
        client.collections.delete(name)
    client.collections.create(
        name,
        properties=[
            Property(name="original_string", data_type=DataType.TEXT),
            Property(name="hash_value", data_type=DataType.TEXT),
            Property(name="field_type", data_type=DataType.TEXT),
            Property(name="frequency", data_type=DataType.INT),
        ],
        vector_config=Configure.Vectors.self_provided(name="default", vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)),
    )
    collection = client.collections.get(name)
    started = time.perf_counter()
    n = 0
    batcher = collection.batch.fixed_size(batch_size=100, concurrent_requests=2) if mode == "fixed" else collection.batch.dynamic()
    with batcher as batch:
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                o = json.loads(line)
                v = o["vector"]
                vector = np.frombuffer(base64.b64decode(v), dtype="<f4").tolist() if isinstance(v, str) else v
                batch.add_object(properties=o["properties"], uuid=o["uuid"], vector={"default": vector})
                n += 1
    seconds = time.perf_counter() - started
    failed = len(collection.batch.failed_objects)
    print(json.dumps({"objects": n, "seconds": seconds, "failed": failed}))
finally:
    client.close()
