"""The official `openai` Python SDK, directly against the fakes and through Switchback.

Every case of ../cases.json is sent twice per mode, once to the fake provider itself and
once through the gateway, and what the SDK returned is compared field by field (the SDK's
own objects, dumped with every field and every provider extra), except for what the README
says Switchback sets: the response `id`, `role` only on a choice's first delta, and
`usage: null` on chunks (the gateway asks its upstream for usage). Errors compare the
exception class and the status; through the gateway the SDK must not retry
(`x-should-retry: false`). Writes a JSON report; exits 1 if any comparison differs.

Run by ../run.sh; stdlib + the pinned `openai` only.
"""

import argparse
import copy
import json
import sys

import httpx2
import openai
import pydantic


class Counter:
    """Counts the HTTP requests the SDK sends (its own retries included)."""

    def __init__(self):
        self.n = 0

    def hook(self, _request):
        self.n += 1


def client(base_url, key, counter, read_timeout=None):
    return openai.OpenAI(
        base_url=base_url,
        api_key=key,
        timeout=httpx2.Timeout(30.0, read=read_timeout) if read_timeout else 30.0,
        max_retries=2,
        http_client=httpx2.Client(event_hooks={"request": [counter.hook]}),
    )


def azure_client(gateway_url, key, counter):
    """The SDK's Azure client: `api-key` header, `/openai/deployments/{model}/...` paths."""
    return openai.AzureOpenAI(
        azure_endpoint=gateway_url.removesuffix("/v1"),
        api_key=key,
        api_version="2024-10-21",
        timeout=30.0,
        max_retries=2,
        http_client=httpx2.Client(event_hooks={"request": [counter.hook]}),
    )


class Answer(pydantic.BaseModel):
    steps: list[str]
    final_answer: str


def dump(obj):
    return obj.model_dump(mode="json", warnings=False)


def without_id(d):
    d = copy.deepcopy(d)
    if isinstance(d, dict) and "id" in d:
        d["id"] = "<id>"
    return d


def strip_later_roles(chunks):
    """Switchback's documented change: `role` only on a choice's first delta."""
    seen = set()
    out = []
    for c in chunks:
        c = copy.deepcopy(c)
        for choice in c.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("role") is not None:
                if choice.get("index") in seen:
                    delta["role"] = None
                seen.add(choice.get("index"))
        out.append(c)
    return out


def first_difference(want, got, path=""):
    if isinstance(want, dict) and isinstance(got, dict):
        for k in list(want) + [k for k in got if k not in want]:
            if k not in want:
                return f"{path}.{k}: only through the gateway: {got[k]!r:.200}"
            if k not in got:
                return f"{path}.{k}: only directly: {want[k]!r:.200}"
            d = first_difference(want[k], got[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(want, list) and isinstance(got, list):
        for i, (w, g) in enumerate(zip(want, got)):
            d = first_difference(w, g, f"{path}[{i}]")
            if d:
                return d
        if len(want) != len(got):
            return f"{path}: {len(want)} item(s) directly, {len(got)} through the gateway"
        return None
    if want != got:
        return f"{path}: directly {want!r:.200}, through the gateway {got!r:.200}"
    return None


def text_of(completion):
    c = completion["choices"][0]
    return {"content": c["message"].get("content"), "finish_reason": c.get("finish_reason")}


def text_of_chunks(chunks):
    content = "".join(
        (ch.get("delta") or {}).get("content") or ""
        for c in chunks
        for ch in c.get("choices") or []
        if ch.get("index") == 0
    )
    finish = [
        ch.get("finish_reason")
        for c in chunks
        for ch in c.get("choices") or []
        if ch.get("index") == 0 and ch.get("finish_reason")
    ]
    return {"content": content, "finish_reason": finish[-1] if finish else None}


def call(sdk, case, mode, model, tools):
    params = {"model": model, "messages": [{"role": "user", "content": "say something"}]}
    params.update(case.get("params", {}))
    if case.get("tools"):
        params["tools"] = tools
    if mode in ("stream", "helper"):
        params.update(case.get("stream_params", {}))
    chat = sdk.chat.completions
    if mode == "non_stream":
        return dump(chat.create(**params))
    if mode == "stream":
        return [dump(c) for c in chat.create(stream=True, **params)]
    if mode == "helper":
        with chat.stream(**params) as s:
            for _event in s:
                pass
            return dump(s.get_final_completion())
    if mode == "parse":
        return dump(chat.parse(response_format=Answer, **params))
    raise ValueError(mode)


def outcome(sdk, counter, case, mode, model, tools):
    counter.n = 0
    try:
        return ("ok", call(sdk, case, mode, model, tools), counter.n)
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        err = body.get("error", body) if isinstance(body, dict) else {}
        return (
            "error",
            {"class": type(e).__name__, "status": e.status_code, "type": (err or {}).get("type")},
            counter.n,
        )
    except Exception as e:  # a crash of the SDK on what it got is a finding, not a harness bug
        return ("crash", f"{type(e).__name__}: {e}", counter.n)


def text(v):
    return text_of_chunks(v) if isinstance(v, list) else text_of(v)


def compare(case, mode, direct, gateway):
    """None when the same (modulo the documented fields), else the first difference."""
    (dk, dv, _), (gk, gv, gn) = direct, gateway
    if dk == "crash" and gk == "crash" and dv == gv:
        return None  # the SDK fails on what the provider sends, through the gateway alike
    if dk == "crash":
        return f"the SDK failed directly: {dv}"
    if gk == "crash":
        return f"the SDK failed through the gateway: {gv}"
    if case.get("expect_error"):
        want = case["expect_error"]
        if dk != "error" or dv["class"] != want:
            return f"directly: expected {want}, got {dv}"
        if gk != "error":
            return f"through the gateway: expected {want}, got an answer"
        if gv["class"] != dv["class"] or gv["status"] != dv["status"]:
            return f"directly {dv}, through the gateway {gv}"
        if gn != 1:
            return f"the SDK sent {gn} requests through the gateway (its retries multiplied the gateway's)"
        return None
    if dk != "ok" or gk != "ok":
        return f"directly {dk} {dv!r:.200}, through the gateway {gk} {gv!r:.200}"
    if case.get("compare") == "text":
        return first_difference(text(dv), text(gv), "text")
    if mode == "stream":
        want = [without_id(c) for c in strip_later_roles(dv)]
        got = [without_id(c) for c in gv]
        return first_difference(want, got, "chunks")
    d = first_difference(without_id(dv), without_id(gv), "completion")
    if d is None and case.get("schema"):
        # Structured Outputs: the keys must come in the schema's order, as generated.
        wc, gc = dv["choices"][0]["message"]["content"], gv["choices"][0]["message"]["content"]
        if wc != gc:
            return f"content (key order): directly {wc!r}, through the gateway {gc!r}"
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--fakes", required=True, help="JSON: fake host -> base URL")
    ap.add_argument("--cases", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sabotage", action="store_true", help="compare one case wrongly, to prove the suite can fail")
    a = ap.parse_args()
    fakes = json.loads(a.fakes)
    spec = json.load(open(a.cases))
    tools = [spec["weather_tool"]]
    results, failed = [], 0
    for case in spec["cases"]:
        host, direct_model = case["direct"]
        dc, gc = Counter(), Counter()
        read_timeout = case.get("read_timeout")
        direct_sdk = client(fakes[host], "sk-direct", dc, read_timeout)
        if case.get("client") == "azure":
            gateway_sdk = azure_client(a.gateway, a.key, gc)
        else:
            gateway_sdk = client(a.gateway, a.key, gc, read_timeout)
        row = {"feature": case["feature"], "modes": {}, "direct_failures": []}
        for mode in case["modes"]:
            d = outcome(direct_sdk, dc, case, case.get("direct_mode", mode), direct_model, tools)
            g = outcome(gateway_sdk, gc, case, mode, case["group"], tools)
            if a.sabotage and case["group"] == "plain" and mode == "non_stream" and d[0] == "ok":
                d[1]["choices"][0]["message"]["content"] += " (sabotaged)"
            if d[0] != ("error" if case.get("expect_error") else "ok"):
                row["direct_failures"].append(f"{mode}: {d[1]!r:.300}")
            diff = compare(case, mode, d, g)
            row["modes"][mode] = {"same": diff is None, "detail": diff}
            if diff is not None:
                failed += 1
                print(f"DIFFERS  python  {case['feature']} [{mode}]: {diff}", file=sys.stderr)
        results.append(row)
    json.dump(
        {"sdk": "python", "package": "openai", "version": openai.__version__, "results": results},
        open(a.out, "w"),
        indent=1,
    )
    print(f"python openai {openai.__version__}: {len(results)} cases, {failed} difference(s)", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
