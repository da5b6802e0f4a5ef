#!/usr/bin/env python3
"""Checks `sluice serve --upstream` with the official `openai` and `anthropic` Python SDKs,
their own retries off.

Starts `sluice mock` and `sluice serve --upstream` on free loopback ports, then drives them with
the SDK: streamed and plain calls survive scripted 429s and overloads (Sluice retries them, the
SDK does not), a stream cut after content raises in the SDK instead of ending cleanly, and a final
rate limit arrives as the SDK's RateLimitError. Exits non-zero on the first failed check.

Usage: scripts/sdk_check.py PATH_TO_SLUICE_BINARY
"""

import socket
import subprocess
import sys
import time
import urllib.request

import anthropic
import openai


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def main() -> None:
    binary = sys.argv[1]
    mock_port, gw_port = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([binary, "--log", "warn", "mock", "--listen", f"127.0.0.1:{mock_port}"]))
        wait_for(f"http://127.0.0.1:{mock_port}/stats", procs[-1])
        procs.append(
            subprocess.Popen(
                [binary, "--log", "warn", "serve", "--upstream", f"http://127.0.0.1:{mock_port}/v1",
                 "--listen", f"127.0.0.1:{gw_port}"],
                stdout=subprocess.DEVNULL,
            )
        )
        wait_for(f"http://127.0.0.1:{gw_port}/healthz", procs[-1])

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw_port}/v1", api_key="unused", max_retries=0)
        expected = "".join(f"{w}{i} " for i, w in enumerate(
            ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy"]))

        def faults(script: str, scenario: str) -> dict:
            return {"x-sluice-mock-fault": script, "x-sluice-mock-scenario": scenario}

        # Streaming through three 429s and an overload, SDK retries off.
        stream = client.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers=faults("429,429,503", "stream"),
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == expected, f"streamed text: {text!r}"
        print("ok: streamed call survived 429, 429, 503 with SDK retries off")

        resp = client.chat.completions.with_raw_response.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}],
            extra_headers=faults("429*2", "plain"),
        )
        assert resp.headers["x-sluice-attempts"] == "3", resp.headers
        assert resp.parse().choices[0].message.content == expected
        print("ok: plain call survived two 429s (x-sluice-attempts: 3)")

        # Usage chunk when asked for, through the SDK's own parser.
        stream = client.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )
        usage = [c.usage for c in stream if c.usage]
        assert usage and usage[-1].completion_tokens == 8, usage
        print("ok: include_usage delivers the usage chunk")

        # A stream cut after content must raise, never end as if complete.
        try:
            stream = client.chat.completions.create(
                model="mock-1", messages=[{"role": "user", "content": "hi"}], stream=True,
                extra_headers=faults("cut:3", "cut"),
            )
            got = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            raise SystemExit(f"a cut stream ended cleanly with {got!r}")
        except openai.APIError as e:
            print(f"ok: cut stream raised {type(e).__name__}: {str(e)[:80]}")

        # The official Anthropic SDK against /v1/messages, its retries off too.
        aclient = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw_port}", api_key="unused", max_retries=0)
        with aclient.messages.stream(
            model="mock-1", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
            extra_headers=faults("429,503", "anthropic-stream"),
        ) as stream:
            text = "".join(stream.text_stream)
        assert text == expected, f"anthropic streamed text: {text!r}"
        print("ok: anthropic SDK stream survived 429, 503 with SDK retries off")
        msg = aclient.messages.create(
            model="mock-1", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
            extra_headers=faults("tool", "anthropic-tool"),
        )
        tool = [b for b in msg.content if b.type == "tool_use"][0]
        assert tool.input == {"location": "Paris"} and msg.stop_reason == "tool_use", msg
        print("ok: anthropic SDK receives a tool call translated from an OpenAI-format upstream")
        try:
            with aclient.messages.stream(
                model="mock-1", max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                extra_headers=faults("cut:3", "anthropic-cut"),
            ) as stream:
                got = "".join(stream.text_stream)
            raise SystemExit(f"a cut stream ended cleanly for the anthropic SDK: {got!r}")
        except anthropic.APIError as e:
            print(f"ok: anthropic SDK raised {type(e).__name__} on a stream cut after content")
        # Final rate limit: the SDK's own exception type.
        try:
            client.chat.completions.create(
                model="mock-1", messages=[{"role": "user", "content": "hi"}],
                extra_headers=faults("429:ra=120", "final"),
            )
            raise SystemExit("a 429 with a 120 s hint should fail at once")
        except openai.RateLimitError as e:
            assert e.response.headers.get("retry-after") == "120", e.response.headers
            print("ok: a hint above max_retry_after surfaces as RateLimitError with Retry-After: 120")
        # The hint parks the target for every request: the next call is refused at once with
        # the time left, instead of collecting a 429 of its own.
        try:
            client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
            raise SystemExit("a parked target should refuse at once")
        except openai.RateLimitError as e:
            assert int(e.response.headers["retry-after"]) <= 120, e.response.headers
            print("ok: the 120 s hint parks the target for the next request too")
        print("sdk check passed")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
