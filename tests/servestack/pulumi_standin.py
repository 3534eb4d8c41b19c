"""A stand-in for the Pulumi CLI, put first on PATH as `pulumi` by tests/servestack/test_driver.py.

It appends each invocation (argv, working directory, the PULUMI_* environment) as one JSON line to
$STANDIN_RECORD and answers what the Automation API asks, the way the CLI does:

- `version`: $STANDIN_VERSION (default v3.272.0)
- `stack select --stack S` / `stack init S`: S must be in (or is added to) the state's stacks
- `preview|up|destroy|refresh ... --event-log tcp://HOST:PORT`: engine events streamed over gRPC (the CLI
  does so since 3.206), ending with a summary event; `up`, `destroy`, `refresh` record an update in history
- `stack output --json [--show-secrets] --stack S`: the state's outputs, secrets as "[secret]" unless shown
- `stack history --json ...`: the last update's summary

The state is a JSON file ($STANDIN_STATE): {"stacks": [...], "outputs": {name: {"value", "secret"}},
"history": [...]}.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CHANGES = {"preview": {"create": 2, "same": 1}, "up": {"create": 2, "same": 1}, "destroy": {"delete": 3},
           "refresh": {"same": 3}}
RESOURCES = (("urn:pulumi:{stack}::servestack::pulumi:pulumi:Stack::servestack-{stack}", "pulumi:pulumi:Stack", "same"),
             ("urn:pulumi:{stack}::servestack::kubernetes:core/v1:Namespace::servestack",
              "kubernetes:core/v1:Namespace", "create"),
             ("urn:pulumi:{stack}::servestack::kubernetes:apps/v1:Deployment::servestack",
              "kubernetes:apps/v1:Deployment", "create"))


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _events(verb: str, stack: str) -> list[dict[str, object]]:
    planning = verb == "preview"
    events: list[dict[str, object]] = [{"preludeEvent": {"config": {}}}]
    for urn, kind, op in RESOURCES:
        op = {"destroy": "delete", "refresh": "refresh"}.get(verb, op)
        metadata = {"op": op, "urn": urn.format(stack=stack), "type": kind, "provider": ""}
        events.append({"resourcePreEvent": {"metadata": metadata, "planning": planning}})
        if not planning:
            events.append({"resOutputsEvent": {"metadata": metadata}})
    if "--policy-pack" in sys.argv:
        events.append({"policyEvent": {"message": "the Service is public", "color": "never",
                                       "policyName": "world-ingress-allowlist", "policyPackName": "servestack",
                                       "policyPackVersion": "0.1.0", "policyPackVersionTag": "0.1.0",
                                       "enforcementLevel": "advisory",
                                       "resourceUrn": RESOURCES[2][0].format(stack=stack)}})
    events.append({"summaryEvent": {"maybeCorrupt": False, "durationSeconds": 1, "resourceChanges": CHANGES[verb],
                                    "PolicyPacks": {}}})
    events.append({"cancelEvent": {}})
    return [{"sequence": i, "timestamp": 1_780_000_000 + i, **e} for i, e in enumerate(events)]


def _stream(address: str, events: list[dict[str, object]]) -> None:
    import grpc
    from pulumi.runtime.proto import events_pb2, events_pb2_grpc

    with grpc.insecure_channel(address.removeprefix("tcp://")) as channel:
        stub = events_pb2_grpc.EventsStub(channel)
        stub.StreamEvents(iter([events_pb2.EventRequest(event=json.dumps(e)) for e in events]))


def main() -> int:
    argv = sys.argv[1:]
    with open(os.environ["STANDIN_RECORD"], "a") as record:
        record.write(json.dumps({"argv": argv, "cwd": os.getcwd(),
                                 "env": {k: v for k, v in os.environ.items() if k.startswith("PULUMI_")}}) + "\n")
    state_path = Path(os.environ["STANDIN_STATE"])
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"stacks": [], "outputs": {}}
    args = [a for a in argv if a != "--non-interactive"]
    stack = _flag(args, "--stack") or ""

    if os.environ.get("STANDIN_FAIL") == "stack select" and args[:2] == ["stack", "select"]:
        print("error: [401] Unauthorized: invalid access token", file=sys.stderr)
        return 255
    if args == ["version"]:
        print(os.environ.get("STANDIN_VERSION", "v3.272.0"))
    elif args[:2] == ["stack", "select"]:
        if stack not in state["stacks"]:
            print(f"error: no stack named '{stack}' found", file=sys.stderr)
            return 255
    elif args[:2] == ["stack", "init"]:
        state["stacks"].append(args[2])
    elif args[0] in CHANGES:
        verb = args[0]
        if os.environ.get("STANDIN_FAIL") == verb:
            print("error: update failed", file=sys.stderr)
            print("    error: creating Deployment: context deadline exceeded")
            return 255
        _stream(_flag(args, "--event-log") or "", _events(verb, stack))
        print(f"{verb}: done")
        if verb != "preview":
            state["history"] = [{"kind": "update" if verb == "up" else verb, "startTime": "2026-11-29T23:00:00.000Z",
                                 "endTime": "2026-11-29T23:00:01.000Z", "message": "", "environment": {},
                                 "config": {}, "result": "succeeded", "version": 1,
                                 "resourceChanges": CHANGES[verb]}]
    elif args[:3] == ["stack", "output", "--json"]:
        shown = "--show-secrets" in args
        print(json.dumps({name: o["value"] if shown or not o["secret"] else "[secret]"
                          for name, o in state["outputs"].items()}))
    elif args[:3] == ["stack", "history", "--json"]:
        print(json.dumps(state.get("history", [])))
    else:
        print(f"stand-in pulumi: unexpected command {argv}", file=sys.stderr)
        return 2
    state_path.write_text(json.dumps(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
