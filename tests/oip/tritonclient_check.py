"""Talks to a rankd node with the unchanged `tritonclient[grpc]` package, as any Triton or
KServe client would, and checks every answer. Run by tests/tests/oip_tritonclient.rs, which
starts the node and passes the native Rank API's answer in; by hand:

    .venv/bin/python tests/oip/tritonclient_check.py --addr 127.0.0.1:50051 \
        --query-file models/demo/example_query.json --expect-json expect.json

`--expect-json` holds {"model_name", "model_version", "top_k", "ids", "scores"}: what
rankd.v1.Ranker/Rank returned for the query file's query and candidates. With
`--descriptor-set` (rankd's encoded FileDescriptorSet), the script also compares rankd's
`inference` proto with the one compiled into tritonclient, field by field.

Exit status 0 when every check passes; otherwise 1, with the failed check on stderr.
"""

import argparse
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

SCORE_TOLERANCE = 1e-4

# What rankd's proto (the Open Inference Protocol's current definition) has and the copy
# compiled into tritonclient lacks: ModelMetadataResponse.properties, a map, and the entry
# message that carries it. Triton clients skip unknown fields, so an addition is compatible;
# anything else that differs is not.
ALLOWED_ADDITIONS = {
    ("inference.ModelMetadataResponse", "properties"),
    ("inference.ModelMetadataResponse.PropertiesEntry", "key"),
    ("inference.ModelMetadataResponse.PropertiesEntry", "value"),
}


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    print(f"ok: {what}")


def expect_error(call, code, needle, what):
    try:
        call()
    except InferenceServerException as e:
        status = str(e.status())
        check(status == f"StatusCode.{code}", f"{what}: status {status} is {code}")
        check(needle in e.message(), f"{what}: message {e.message()!r} names {needle!r}")
        return
    raise CheckFailed(f"{what}: expected {code}, the call succeeded")


def field_table(message):
    """A message's fields, nested types included: {(full name, field): wire facts}."""
    table = {}

    def walk(msg, prefix):
        full = f"{prefix}.{msg.name}"
        for f in msg.field:
            oneof = msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
            table[(full, f.name)] = (f.number, f.label, f.type, f.type_name, oneof)
        for nested in msg.nested_type:
            walk(nested, full)

    walk(message, "inference")
    return table


def compare_descriptors(path):
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(path, "rb").read())
    ours = [f for f in fds.file if f.package == "inference"]
    check(len(ours) == 1, "rankd's descriptor set has one file in package 'inference'")
    ours = ours[0]
    theirs = descriptor_pb2.FileDescriptorProto.FromString(service_pb2.DESCRIPTOR.serialized_pb)

    our_service = {s.name: s for s in ours.service}.get("GRPCInferenceService")
    their_service = {s.name: s for s in theirs.service}["GRPCInferenceService"]
    check(our_service is not None, "rankd defines inference.GRPCInferenceService")
    their_methods = {m.name: m for m in their_service.method}
    for m in our_service.method:
        t = their_methods.get(m.name)
        check(t is not None, f"tritonclient knows RPC {m.name}")
        check(
            (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            == (t.input_type, t.output_type, t.client_streaming, t.server_streaming),
            f"RPC {m.name}: {m.input_type} -> {m.output_type} as in tritonclient",
        )

    their_messages = {m.name: m for m in theirs.message_type}
    compared = 0
    for msg in ours.message_type:
        t = their_messages.get(msg.name)
        check(t is not None, f"tritonclient knows message {msg.name}")
        a, b = field_table(msg), field_table(t)
        for key, facts in a.items():
            if key in ALLOWED_ADDITIONS:
                check(key not in b, f"{key[0]}.{key[1]} is a documented addition")
                continue
            check(b.get(key) == facts, f"{key[0]}.{key[1]} has tritonclient's number, label, type and oneof")
            compared += 1
        missing = sorted(set(b) - set(a))
        check(not missing, f"{msg.name}: rankd lacks none of tritonclient's fields ({missing})")
    print(f"ok: {compared} fields in {len(ours.message_type)} messages match tritonclient's proto")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", required=True, help="host:port of a rankd node's gRPC port")
    p.add_argument("--query-file", required=True, help="a query JSON: {query, candidates}")
    p.add_argument("--expect-json", required=True, help="the native Rank answer (see above)")
    p.add_argument("--descriptor-set", help="rankd's encoded FileDescriptorSet, to compare")
    args = p.parse_args()

    q = json.load(open(args.query_file))
    expect = json.load(open(args.expect_json))
    name, version, top_k = expect["model_name"], expect["model_version"], expect["top_k"]

    if args.descriptor_set:
        compare_descriptors(args.descriptor_set)

    client = grpcclient.InferenceServerClient(url=args.addr)
    check(client.is_server_live(), "is_server_live")
    check(client.is_server_ready(), "is_server_ready")
    check(client.is_model_ready(name), f"is_model_ready({name!r})")
    check(client.is_model_ready(name, version), f"is_model_ready({name!r}, {version!r})")
    expect_error(lambda: client.is_model_ready("no-such-model"), "NOT_FOUND", "no-such-model",
                 "is_model_ready of an unknown model")

    server = client.get_server_metadata(as_json=True)
    check(server["name"] == "rankd", f"get_server_metadata: name {server['name']!r}")

    meta = client.get_model_metadata(name, as_json=True)
    check(meta["name"] == name and meta["versions"] == [version],
          f"get_model_metadata: {meta['name']} versions {meta['versions']}")
    inputs = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]}
    outputs = {t["name"]: t["datatype"] for t in meta["outputs"]}
    dq = len(q["query"])
    check(inputs == {"query": ("FP32", [-1, dq]), "candidate_ids": ("INT64", [-1, -1])},
          f"model inputs {inputs}")
    check(outputs == {"item_ids": "INT64", "scores": "FP32"}, f"model outputs {outputs}")

    # One row: the query file's query and candidates, exactly as Rank got them.
    query = np.asarray([q["query"]], dtype=np.float32)
    candidates = np.asarray([q["candidates"]], dtype=np.int64)

    def infer(query, candidates, **kw):
        ins = [
            grpcclient.InferInput("query", list(query.shape), "FP32"),
            grpcclient.InferInput("candidate_ids", list(candidates.shape), "INT64"),
        ]
        ins[0].set_data_from_numpy(query)
        ins[1].set_data_from_numpy(candidates)
        return client.infer(name, ins, **kw)

    result = infer(query, candidates, request_id="tritonclient-1", parameters={"top_k": top_k})
    resp = result.get_response()
    check(resp.id == "tritonclient-1", "the request id is echoed")
    check(resp.model_version == version, f"model_version {resp.model_version!r} is the active version")
    ids, scores = result.as_numpy("item_ids"), result.as_numpy("scores")
    check(ids.dtype == np.int64 and scores.dtype == np.float32, "output dtypes INT64 and FP32")
    check(ids.shape == (1, top_k) and scores.shape == (1, top_k), f"output shapes {ids.shape}, {scores.shape}")
    check(ids[0].tolist() == expect["ids"], "item_ids equal the native Rank answer")
    diff = np.abs(scores[0] - np.asarray(expect["scores"], dtype=np.float32)).max()
    check(diff <= SCORE_TOLERANCE, f"scores equal the native Rank answer (max diff {diff:g})")

    # Two rows in one call: the same query, candidates in reverse order; ranks are the same.
    batch = infer(np.repeat(query, 2, axis=0),
                  np.stack([candidates[0], candidates[0][::-1]]),
                  parameters={"top_k": top_k},
                  outputs=[grpcclient.InferRequestedOutput("item_ids")])
    both = batch.as_numpy("item_ids")
    check(both.shape == (2, top_k) and batch.as_numpy("scores") is None,
          "a batch of two rows, only the requested output")
    check(both[0].tolist() == expect["ids"] and both[1].tolist() == expect["ids"],
          "each row ranks as Rank does")

    fp64 = [_input("query", query.astype(np.float64), "FP64"),
            _input("candidate_ids", candidates, "INT64")]
    expect_error(lambda: client.infer(name, fp64), "INVALID_ARGUMENT", "'query'",
                 "an FP64 query")
    expect_error(lambda: client.get_model_config(name), "UNIMPLEMENTED", "",
                 "get_model_config (not part of rankd's protocol subset)")
    print("tritonclient: all checks passed")


def _input(name, array, datatype):
    t = grpcclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array)
    return t


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
