"""The friendly client: numpy in, numpy out, retries that never apply a write twice."""
from __future__ import annotations

import math
import time
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict

from .v1 import cluster_pb2_grpc, collections_pb2, collections_pb2_grpc, common_pb2, points_pb2, points_pb2_grpc

# Codes after which the same request may be sent again (to the same or another node).
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

_METRICS = {"l2": collections_pb2.L2, "ip": collections_pb2.IP, "cosine": collections_pb2.COSINE}
_INDEXES = {"flat": collections_pb2.FLAT, "ivf_flat": collections_pb2.IVF_FLAT, "ivf_pq": collections_pb2.IVF_PQ,
            "graph": collections_pb2.GRAPH}
_CONSISTENCY = {"linearizable": points_pb2.LINEARIZABLE, "eventual": points_pb2.EVENTUAL}

Filter = Mapping[str, Any]
Payload = Mapping[str, Any]


class QuiverError(Exception):
    """A call failed; `code` is the grpc.StatusCode, `message` the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def _value(v: Any) -> points_pb2.Value:
    """A payload or filter value as a quiver.v1.Value (bool before int: bool is an int in Python)."""
    out = points_pb2.Value()
    if isinstance(v, bool) or isinstance(v, np.bool_):
        out.bool_value = bool(v)
    elif isinstance(v, (int, np.integer)):
        out.int_value = int(v)
    elif isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            raise ValueError(f"payload value {v!r} is not finite")
        out.double_value = float(v)
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, (list, tuple)):
        for item in v:
            if isinstance(item, (list, tuple)):
                raise ValueError("payload lists hold scalars only")
            out.list_value.values.append(_value(item))
    else:
        raise TypeError(f"unsupported payload value {v!r} ({type(v).__name__})")
    return out


def _from_value(v: points_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "list_value":
        return [_from_value(x) for x in v.list_value.values]
    return getattr(v, kind) if kind else None


def _filter(f: Filter) -> points_pb2.Filter:
    """Builds a quiver.v1.Filter from a plain dict (see the README for the forms)."""
    out = points_pb2.Filter()
    if not isinstance(f, Mapping):
        raise TypeError(f"a filter is a dict, not {type(f).__name__}")
    if "and" in f or "or" in f:
        op = "and" if "and" in f else "or"
        target = getattr(out, op)
        target.SetInParent()
        for sub in f[op]:
            target.filters.append(_filter(sub))
    elif "not" in f:
        getattr(out, "not").CopyFrom(_filter(f["not"]))
    elif "match" in f:
        out.match.key = f["key"]
        out.match.value.CopyFrom(_value(f["match"]))
    elif "range" in f:
        out.range.key = f["key"]
        bounds = f["range"]
        unknown = set(bounds) - {"gt", "gte", "lt", "lte"}
        if unknown:
            raise ValueError(f"range bounds are gt, gte, lt, lte; not {sorted(unknown)}")
        for name, bound in bounds.items():
            setattr(out.range, name, float(bound))
    elif "in" in f:
        out.__getattribute__("in").key = f["key"]
        for v in f["in"]:
            out.__getattribute__("in").values.append(_value(v))
    else:
        raise ValueError(f"unknown filter {dict(f)!r}: use match, range, in, and, or, not")
    return out


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class Client:
    """A connection to a Quiver node or cluster.

    Args:
        addresses: "host:port" or a list of them (the nodes of a cluster). On
            UNAVAILABLE the client moves to the next address.
        api_key: sent as `authorization: Bearer <key>` when set.
        tls_ca: path of a PEM CA; enables TLS (with tls_cert/tls_key: mutual TLS).
        timeout: deadline of each call, in seconds.
        max_attempts: tries per call for UNAVAILABLE / DEADLINE_EXCEEDED.
        client_id: identifies this client's writes for deduplication (default:
            a random UUID per Client).
    """

    def __init__(self, addresses: Union[str, Sequence[str]] = "127.0.0.1:7700", *, api_key: Optional[str] = None,
                 tls_ca: Optional[str] = None, tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 timeout: float = 30.0, max_attempts: int = 8, client_id: Optional[str] = None):
        self._addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self._addresses:
            raise ValueError("no address given")
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._credentials = None
        if tls_ca:
            self._credentials = grpc.ssl_channel_credentials(_read(tls_ca), _read(tls_key), _read(tls_cert))
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._client_id = client_id or uuid.uuid4().hex
        self._sequence = 0
        self._current = 0
        self._channel = None
        self._connect()

    # ---- connection and retries

    def _connect(self) -> None:
        if self._channel is not None:
            self._channel.close()
        address = self._addresses[self._current]
        options = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]
        if self._credentials is not None:
            self._channel = grpc.secure_channel(address, self._credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._collections = collections_pb2_grpc.CollectionsStub(self._channel)
        self._points = points_pb2_grpc.PointsStub(self._channel)
        self._cluster = cluster_pb2_grpc.ClusterStub(self._channel)

    def _call(self, method_name: str, stub_name: str, request):
        """Sends `request`, retrying retryable failures with backoff on the next address."""
        delay = 0.05
        for attempt in range(self._max_attempts):
            method = getattr(getattr(self, stub_name), method_name)
            try:
                return method(request, timeout=self._timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                code = e.code()
                if code not in _RETRYABLE or attempt + 1 == self._max_attempts:
                    raise QuiverError(code, e.details() or "") from None
                if code == grpc.StatusCode.UNAVAILABLE and len(self._addresses) > 1:
                    self._current = (self._current + 1) % len(self._addresses)
                    self._connect()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def _request_id(self) -> common_pb2.RequestId:
        self._sequence += 1
        return common_pb2.RequestId(client_id=self._client_id, sequence=self._sequence)

    def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- collections

    def create_collection(self, name: str, dimension: int, metric: str = "l2", index: str = "flat", *,
                          nlist: int = 0, nprobe: int = 0, pq_dim: int = 0, pq_bits: int = 0, refine_factor: int = 0,
                          degree: int = 0, itopk: int = 0, segment_max_points: int = 0,
                          indexed_payload_fields: Iterable[str] = ()) -> Dict[str, Any]:
        """Creates a collection; returns its description (as `get_collection`).

        metric: "l2", "ip" or "cosine"; index: "flat", "ivf_flat", "ivf_pq" or "graph".
        Zero parameters take the server's defaults.
        """
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {sorted(_METRICS)}")
        if index not in _INDEXES:
            raise ValueError(f"index must be one of {sorted(_INDEXES)}")
        config = collections_pb2.CollectionConfig(name=name, dimension=dimension, metric=_METRICS[metric],
                                                  segment_max_points=segment_max_points)
        config.indexed_payload_fields.extend(indexed_payload_fields)
        config.index.type = _INDEXES[index]
        config.index.ivf_flat.nlist, config.index.ivf_flat.nprobe = nlist, nprobe
        pq = config.index.ivf_pq
        pq.nlist, pq.nprobe, pq.pq_dim, pq.pq_bits, pq.refine_factor = nlist, nprobe, pq_dim, pq_bits, refine_factor
        config.index.graph.degree, config.index.graph.itopk = degree, itopk
        req = collections_pb2.CreateCollectionRequest(config=config, request_id=self._request_id())
        resp = self._call("Create", "_collections", req)
        return MessageToDict(resp.collection, preserving_proto_field_name=True)

    def get_collection(self, name: str) -> Dict[str, Any]:
        """The collection's configuration and counters (points, segments, index bytes)."""
        resp = self._call("Get", "_collections", collections_pb2.GetCollectionRequest(name=name))
        return MessageToDict(resp.collection, preserving_proto_field_name=True)

    def list_collections(self) -> List[Dict[str, Any]]:
        resp = self._call("List", "_collections", collections_pb2.ListCollectionsRequest())
        return [MessageToDict(c, preserving_proto_field_name=True) for c in resp.collections]

    def delete_collection(self, name: str) -> None:
        req = collections_pb2.DeleteCollectionRequest(name=name, request_id=self._request_id())
        self._call("Delete", "_collections", req)

    # ---- points

    def upsert(self, collection: str, ids: Sequence[int], vectors, payloads: Optional[Sequence[Payload]] = None, *,
               batch_size: int = 1000) -> int:
        """Inserts or replaces points, `batch_size` per request; returns the last log index.

        ids: n integers >= 0; vectors: an (n, dimension) array-like of floats;
        payloads: n dicts (or None) of str -> str | int | float | bool | list.
        """
        ids = np.asarray(ids, dtype=np.uint64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"vectors must be ({ids.shape[0]}, dimension), not {vectors.shape}")
        if payloads is not None and len(payloads) != ids.shape[0]:
            raise ValueError(f"{len(payloads)} payloads for {ids.shape[0]} points")
        last = 0
        for lo in range(0, ids.shape[0], batch_size):
            req = points_pb2.UpsertRequest(collection=collection)
            for i in range(lo, min(lo + batch_size, ids.shape[0])):
                p = req.points.add(id=int(ids[i]))
                p.vector.extend(vectors[i].tolist())
                if payloads is not None and payloads[i]:
                    for key, value in payloads[i].items():
                        p.payload[key].CopyFrom(_value(value))
            req.request_id.CopyFrom(self._request_id())  # one id per batch, kept across its retries
            last = self._call("Upsert", "_points", req).log_index
        return last

    def delete(self, collection: str, ids: Sequence[int]) -> int:
        """Deletes points (absent ids are ignored); returns the log index."""
        req = points_pb2.DeletePointsRequest(collection=collection, ids=[int(i) for i in ids],
                                             request_id=self._request_id())
        return self._call("Delete", "_points", req).log_index

    def get(self, collection: str, ids: Sequence[int], *, with_vector: bool = False, with_payload: bool = True,
            consistency: str = "linearizable") -> List[Dict[str, Any]]:
        """The points that exist, in request order: dicts with id, vector (numpy), payload."""
        req = points_pb2.GetPointsRequest(collection=collection, ids=[int(i) for i in ids], with_vector=with_vector,
                                          with_payload=with_payload, consistency=_CONSISTENCY[consistency])
        out = []
        for p in self._call("Get", "_points", req).points:
            item: Dict[str, Any] = {"id": p.id}
            if with_vector:
                item["vector"] = np.asarray(p.vector, dtype=np.float32)
            if with_payload:
                item["payload"] = {k: _from_value(v) for k, v in p.payload.items()}
            out.append(item)
        return out

    def count(self, collection: str, consistency: str = "linearizable") -> int:
        req = points_pb2.CountRequest(collection=collection, consistency=_CONSISTENCY[consistency])
        return self._call("Count", "_points", req).count

    def search(self, collection: str, vector, k: int = 10, *, filter: Optional[Filter] = None,
               with_payload: bool = False, nprobe: int = 0, itopk: int = 0, search_width: int = 0,
               refine_factor: int = 0, consistency: str = "linearizable"):
        """The k nearest points to `vector`, best first.

        Returns (ids int64[m], scores float32[m]) with m <= k, plus a list of
        payload dicts when with_payload. Scores: squared L2 distance (smaller is
        better) or inner product / cosine similarity (larger is better).
        """
        req = points_pb2.SearchRequest(collection=collection, k=k, with_payload=with_payload,
                                       consistency=_CONSISTENCY[consistency])
        req.vector.extend(np.asarray(vector, dtype=np.float32).reshape(-1).tolist())
        req.params.nprobe, req.params.itopk = nprobe, itopk
        req.params.search_width, req.params.refine_factor = search_width, refine_factor
        if filter is not None:
            req.filter.CopyFrom(_filter(filter))
        hits = self._call("Search", "_points", req).hits
        ids = np.array([h.id for h in hits], dtype=np.int64)
        scores = np.array([h.score for h in hits], dtype=np.float32)
        if with_payload:
            return ids, scores, [{k: _from_value(v) for k, v in h.payload.items()} for h in hits]
        return ids, scores

    def search_batch(self, collection: str, vectors, k: int = 10, *, filter: Optional[Filter] = None,
                     nprobe: int = 0, itopk: int = 0, search_width: int = 0, refine_factor: int = 0,
                     consistency: str = "linearizable") -> Tuple[np.ndarray, np.ndarray]:
        """k nearest points for each row of `vectors` (nq, dimension), in one request.

        Returns ids int64[nq, k] and scores float32[nq, k], best first; rows with
        fewer than k hits are padded with id -1 and score NaN (as FAISS does).
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (nq, dimension), not {vectors.shape}")
        req = points_pb2.SearchBatchRequest(collection=collection, k=k, consistency=_CONSISTENCY[consistency])
        for row in vectors:
            req.queries.add().values.extend(row.tolist())
        req.params.nprobe, req.params.itopk = nprobe, itopk
        req.params.search_width, req.params.refine_factor = search_width, refine_factor
        if filter is not None:
            req.filter.CopyFrom(_filter(filter))
        results = self._call("SearchBatch", "_points", req).results
        ids = np.full((vectors.shape[0], k), -1, dtype=np.int64)
        scores = np.full((vectors.shape[0], k), np.nan, dtype=np.float32)
        for q, result in enumerate(results):
            for j, hit in enumerate(result.hits):
                ids[q, j] = hit.id
                scores[q, j] = hit.score
        return ids, scores

    # ---- cluster

    def cluster_status(self) -> Dict[str, Any]:
        """The answering node's view of its Raft group (role, leader, term, members)."""
        from .v1 import cluster_pb2

        r = self._call("Status", "_cluster", cluster_pb2.ClusterStatusRequest())
        return {"node_id": r.node_id, "role": r.role, "leader_id": r.leader_id, "term": r.term,
                "commit_index": r.commit_index, "applied_index": r.applied_index,
                "members": [{"node_id": m.node_id, "voter": m.voter, "match_index": m.match_index,
                             "recently_active": m.recently_active} for m in r.members]}
