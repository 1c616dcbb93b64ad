"""Live listening against a real server: update rate, sound-to-answer latency, dropped hops, memory (issue 11).

A real ``asit serve`` process (waitress, its threads, the default CPU lock) with a wav2vec2-base-sized model
(``base-random``: random weights, the real compute), and client threads that each *stream in real time*: a client
"captures" a synthetic recording at 16 kHz wall-clock pace and, with at most one request in flight (the page's
rule), POSTs everything captured since its last request (at least ``--chunk-s``) to ``/live/<id>/audio``. Each
update's latency is the time from the capture of the window's last sample to the answer arriving in the client
(sound in -> result in the client). A chunk that made no hop due measures the transport alone (``transport_ms``).

``updates_per_s`` is the rate a listener sees while listening: updates per second of the sound streamed between
the hops its first and last updates answer. (A session's first hop is due only after ``hop_s`` of audio, so a rate
over the whole wall time, ``updates_per_wall_s``, can never reach the hop rate; one over the updates' arrival
times, ``arrival_updates_per_s``, adds the first and last answers' latency jitter.) ``server_updates_per_s`` is
what the page shows: the server's own rate over the last 10 s of wall time, from its last answer. The warm-up is
one session long enough to fill the model's window, as a user's first Listen is: the server has then seen every
input length a session classifies.

Runs with 1 listener, then with ``--listeners`` (default 4) at once; prints one JSON object with a run for each.

    python bench/live.py [--json] [--seconds 30] [--listeners 4] [--hop 0.5] [--threads 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the server process is test tooling
from loadtest import ServerProcess  # noqa: E402

SR = 16000


def recording(seconds: float, seed: int) -> np.ndarray:
    from asit_helpers.synth import SYNTH_CLASSES, render_recording

    rng = np.random.default_rng(seed)
    events = [(SYNTH_CLASSES[int(rng.integers(22))].name, t) for t in np.arange(2.0, seconds - 3.0, 6.0)]
    return render_recording(events, seconds + 1.0, seed=seed)[0]


def listener(url: str, audio: np.ndarray, args, out: dict, start: threading.Barrier) -> None:
    """One real-time client; fills ``out`` with latencies, transport times, errors and the session's counters."""
    import requests

    http = requests.Session()
    seconds, chunk_s = args.seconds, args.chunk_s
    info = http.post(url + "/live", params={"hop_s": args.hop}, timeout=30).json()
    audio_url = f"{url}/{info['audio_url']}"
    max_chunk = int(info["max_chunk_s"] * SR)
    latencies, transport, errors, skipped, arrivals, heard, server_rate = [], [], [], 0, [], [], None
    sent = seq = 0  # samples sent (session time), chunks sent
    offset = 0  # captured-sample index minus session-sample index (grows if the client ever has to skip audio)
    start.wait()
    t0 = time.perf_counter()
    while True:
        now = time.perf_counter() - t0
        captured = min(int(now * SR), audio.size)
        if now >= seconds:
            break
        if captured - (sent + offset) < int(chunk_s * SR):
            time.sleep(chunk_s - (captured - sent - offset) / SR)
            continue
        first = sent + offset
        if captured - first > max_chunk:  # more than one chunk waited: send the newest (never reached here so far)
            skipped += captured - first - max_chunk
            offset += captured - first - max_chunk
            first = captured - max_chunk
        body = audio[first:captured].astype("<f4").tobytes()
        posted = time.perf_counter()
        try:
            resp = http.post(audio_url, params={"seq": seq}, data=body,
                             headers={"Content-Type": "application/octet-stream"}, timeout=30)
        except requests.RequestException as exc:
            errors.append(repr(exc))
            break
        answered = time.perf_counter()
        seq += 1
        sent += captured - first
        if resp.status_code != 200:
            errors.append(f"{resp.status_code}: {resp.text[:200]}")
            break
        answer = resp.json()
        updates = answer["updates"]
        if not updates:
            transport.append(answered - posted)
        else:
            arrivals.append(answered)
            # the newest hop boundary it answers, in capture time (its window ends wherever the chunk ended)
            heard.append(updates[-1]["t_end_s"] // info["hop_s"] * info["hop_s"] + offset / SR)
            server_rate = answer["updates_per_s"]
        for u in updates:
            captured_at = t0 + (u["t_end_s"] * SR + offset) / SR
            latencies.append(answered - captured_at)
    stats = http.delete(f"{url}/live/{info['session']}", timeout=30).json()
    out.update(latencies=latencies, transport=transport, errors=errors, stats=stats, chunks=seq,
               skipped_s=skipped / SR, wall_s=time.perf_counter() - t0, server_rate=server_rate,
               rate=(len(heard) - 1) / (heard[-1] - heard[0]) if len(heard) > 1 else 0.0,
               arrival_rate=(len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0)


def run(server: ServerProcess, n: int, args) -> dict:
    audio = [recording(args.seconds, seed=i) for i in range(n)]
    outs = [dict() for _ in range(n)]
    barrier = threading.Barrier(n)
    rss_before = server.rss_mb()
    threads = [threading.Thread(target=listener, args=(server.url, audio[i], args, outs[i], barrier)) for i in range(n)]
    for t in threads:
        t.start()
    rss = []  # (seconds, MB) every second while the listeners stream: does memory settle or keep growing?
    t0 = time.perf_counter()
    while any(t.is_alive() for t in threads):
        rss.append((time.perf_counter() - t0, server.rss_mb()))
        time.sleep(1.0)
    for t in threads:
        t.join()
    rss_after = server.rss_mb()
    half = [mb for t, mb in rss if t >= rss[-1][0] / 2] if rss else [rss_after]
    lat = np.concatenate([o.get("latencies", []) for o in outs])
    transport = np.concatenate([o.get("transport", []) for o in outs]) * 1000.0
    updates = sum(o["stats"].get("updates_given", 0) for o in outs)
    return {
        "listeners": n,
        "seconds": args.seconds,
        "updates_per_s": round(float(np.mean([o["rate"] for o in outs])), 3),  # per listener, first to last update
        "arrival_updates_per_s": round(float(np.mean([o["arrival_rate"] for o in outs])), 3),
        "server_updates_per_s": round(float(np.mean([o["server_rate"] or 0.0 for o in outs])), 3),
        "updates_per_wall_s": round(updates / n / np.mean([o["wall_s"] for o in outs]), 3),
        "hop_rate_per_s": round(1.0 / args.hop, 3),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_p95_s": round(float(np.percentile(lat, 95)), 3) if lat.size else None,
        "latency_max_s": round(float(lat.max()), 3) if lat.size else None,
        "dropped_hops": int(sum(o["stats"].get("dropped_hops", 0) for o in outs)),
        "hops": int(sum(o["stats"].get("hops", 0) for o in outs)),
        "updates": int(updates),
        "chunks": int(sum(o["chunks"] for o in outs)),
        "client_skipped_s": round(sum(o["skipped_s"] for o in outs), 3),
        "transport_ms_p50": round(float(np.percentile(transport, 50)), 2) if transport.size else None,
        "transport_ms_p95": round(float(np.percentile(transport, 95)), 2) if transport.size else None,
        "errors": int(sum(len(o["errors"]) for o in outs)),
        "first_error": next((o["errors"][0] for o in outs if o["errors"]), None),
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(rss_after, 1),
        "rss_mb_max": round(max([mb for _, mb in rss] + [rss_after]), 1),
        "rss_mb_second_half_growth": round(rss_after - half[0], 1),  # after the first half of the run
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--preset", default="base-random", help="model size (default base-random: wav2vec2-base)")
    ap.add_argument("--seconds", type=float, default=30.0, help="streaming time per run")
    ap.add_argument("--listeners", type=int, default=4, help="simultaneous listeners in the second run")
    ap.add_argument("--hop", type=float, default=0.5, help="hop the server is asked for (s)")
    ap.add_argument("--chunk-s", type=float, default=0.1, help="least audio per request (s)")
    ap.add_argument("--threads", type=int, default=8, help="waitress threads")
    ap.add_argument("--out", type=Path, default=RESULTS / "live.json")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve import save_random_model  # bench/serve.py's 22-class random model

    say = (lambda *a: None) if args.json else print
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_random_model(args.preset, Path(tmp))
        with ServerProcess(checkpoint, threads=args.threads,
                           extra_args=["--max-listeners", str(max(4, args.listeners))]) as server:
            window_s = json.loads((checkpoint / "config.json").read_text())["clip_seconds"]
            # the bf16 copy and every length a session classifies while its first window fills
            warm = run(server, 1, argparse.Namespace(**{**vars(args), "seconds": window_s + 1.5}))
            say(f"warm-up: {warm['updates']} updates, errors {warm['errors']}")
            runs = []
            for n in (1, args.listeners):
                result = run(server, n, args)
                runs.append(result)
                say(f"{n} listener(s): {result['updates_per_s']} updates/s each (server says "
                    f"{result['server_updates_per_s']}; hop rate {result['hop_rate_per_s']}),"
                    f" latency p50 {result['latency_p50_s']} s, p95 {result['latency_p95_s']} s, "
                    f"dropped {result['dropped_hops']}/{result['hops']} hops, errors {result['errors']}, "
                    f"RSS {result['rss_mb_before']} -> {result['rss_mb_after']} MB "
                    f"(+{result['rss_mb_second_half_growth']} MB in its second half), "
                    f"transport p50 {result['transport_ms_p50']} ms")
    report = {"machine": machine_info(), "model": args.preset, "hop_s": args.hop, "chunk_s": args.chunk_s,
              "threads": args.threads, "transport": "chunked POSTs (raw float32), one request in flight per listener",
              "runs": runs}
    write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return 0 if all(r["errors"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
