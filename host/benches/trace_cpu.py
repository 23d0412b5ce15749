"""Open-loop client for host/benches/trace_cpu.sh: a production-like trace
sent at a fixed rate, whatever the answers' pace. Streamed /generate
requests of about 3 KB (one of 16 shared system prompts and a question of
its own), spread over the routers in turn, as an L4 balancer in front of
replicas would. Each answer is read to its end. Prints one JSON line:
requests sent, answered 200 and read whole, failed.

    python3 trace_cpu.py REQUESTS RATE OUTPUT_TOKENS URL...

Loopback only; bounded by REQUESTS and a 60 s cap per request.
"""

import asyncio
import json
import random
import sys
from urllib.parse import urlparse


def prompts(n, seed=7):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(2000)]
    systems = [" ".join(rng.choice(words) for _ in range(420)) for _ in range(16)]
    for i in range(n):
        system = systems[min(int(rng.paretovariate(1.2)) - 1, 15)]
        question = " ".join(rng.choice(words) for _ in range(40))
        yield f"{system}\nQuestion {i}: {question}"


async def one(url, text, output_tokens):
    u = urlparse(url)
    body = json.dumps(
        {"text": text, "stream": True, "sampling_params": {"max_new_tokens": output_tokens}}
    ).encode()
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    head = (
        f"POST /generate HTTP/1.1\r\nhost: {u.netloc}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer.startswith(b"HTTP/1.1 200") and b"[DONE]" in answer


async def main():
    n, rate, output_tokens = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    urls = sys.argv[4:]
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i, text in enumerate(prompts(n)):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        call = one(urls[i % len(urls)], text, output_tokens)
        tasks.append(asyncio.create_task(asyncio.wait_for(call, 60)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = sum(1 for r in results if r is True)
    print(json.dumps({"sent": n, "ok": ok, "failed": n - ok}))


asyncio.run(main())
