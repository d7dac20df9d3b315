"""A client for `openwan serve`, standard library only: ask for a video, then download it.

    openwan serve --port 8000 &                 # the demo model (or --ckpt_dir DIR) kept loaded
    python examples/server_client.py "a red circle moving to the right" --seed 1 --out circle.mp4
    python examples/server_client.py "a blue square moving up" --url http://127.0.0.1:8000 --sample_steps 10

It uses today's API: `POST /generate` with a JSON object (`prompt` plus any argument of the pipeline call:
seed, sample_steps, size, frame_num, guide_scale, negative_prompt ...) answered when the video is done with
{"path", "url", "settings", "seconds"}; then `GET <url>` for the file. `GET /health` says what the server runs.
(A job API in the style of OpenAI's /v1/videos, submit then poll, is being written; this client will follow it.)
"""
import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def call(url: str, body=None, timeout: float = 600) -> bytes:
    """GET (body None) or POST a JSON body; an HTTP error becomes a RuntimeError with the server's message."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", e.reason)
        except (ValueError, AttributeError):
            msg = e.reason
        raise RuntimeError(f"{url}: HTTP {e.code}: {msg}") from None
    except urllib.error.URLError as e:
        raise RuntimeError(f"cannot reach {url} ({e.reason}); start the server with `openwan serve`") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prompt")
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--sample_steps", type=int, default=None)
    ap.add_argument("--size", default=None)
    ap.add_argument("--frame_num", type=int, default=None)
    ap.add_argument("--out", default=None, help="where to save the video (default: its name on the server)")
    a = ap.parse_args(argv)
    base = a.url.rstrip("/")
    try:
        health = json.loads(call(base + "/health"))
        print(f"server: {health['variant']} ({health['task']})")
        req = {k: v for k, v in dict(prompt=a.prompt, seed=a.seed, sample_steps=a.sample_steps, size=a.size,
                                     frame_num=a.frame_num).items() if v is not None}
        reply = json.loads(call(base + "/generate", req))
        data = call(base + reply["url"])
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = a.out or reply["url"].rsplit("/", 1)[-1]
    with open(out + ".part", "wb") as f:      # then renamed: never a half-written video under the real name
        f.write(data)
    os.replace(out + ".part", out)
    print(f"saved {out} ({len(data)} bytes, {reply['seconds']:.1f} s on the server, seed {reply['settings']['seed']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
