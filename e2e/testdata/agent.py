"""A scripted agent for repro's end-to-end tests (no LLM needed, stdlib only).

It does what a research agent does, without the thinking: reads the task from
/task, asks repro for its budget, submits attempts through the agent API, reads
their metrics, and talks to the LLM gateway. The mode is argv[1]:

  score    submit faster.py (shipped with the agent) as one attempt, wait for its score, stop
  greedy   submit two quick attempts; the second must be refused (max_attempts 1)
  forever  print, then sleep past the wall limit
  llm      three chat completions through the gateway, then try to reach other addresses
"""
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid

URL = os.environ["REPRO_AGENT_URL"]
TOKEN = os.environ["REPRO_AGENT_TOKEN"]


def call(method, path, body=None, ctype=None, base=URL):
    req = urllib.request.Request(base + path, data=body, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def submit(files):
    boundary = uuid.uuid4().hex
    parts = []
    for name, content in files.items():
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"files\"; filename=\"%s\"\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name)).encode() + content + b"\r\n")
    body = b"".join(parts) + ("--%s--\r\n" % boundary).encode()
    return call("POST", "/attempts", body, "multipart/form-data; boundary=" + boundary)


def wait(attempt_id):
    while True:
        status, body = call("GET", "/attempts/" + attempt_id)
        run = json.loads(body)
        if run["state"] in ("succeeded", "failed", "error", "canceled"):
            return run
        time.sleep(1)


def main():
    mode = sys.argv[1]
    task = json.load(open("/task/task.json"))
    print("agent: task %s, target val loss %s, budget %s" % (task["task"], task["target_val_loss"], json.dumps(task["budget"])), flush=True)
    status, body = call("GET", "/budget")
    print("agent: budget status %d %s" % (status, body.decode()), flush=True)
    start = open("/task/" + task["script"], "rb").read()
    print("agent: start script %s, %d bytes" % (task["script"], len(start)), flush=True)

    if mode == "score":
        status, body = submit({task["script"]: open("faster.py", "rb").read()})
        print("agent: attempt submitted: %d" % status, flush=True)
        run = wait(json.loads(body)["id"])
        print("agent: attempt %s %s, metrics %s, score %s" % (run["id"], run["state"], json.dumps(run.get("metrics", {}).get("final_val_loss")),
                                                             json.dumps(run.get("score"))), flush=True)
        status, body = call("GET", "/attempts/%s/log" % run["id"])
        print("agent: attempt log %d, %d bytes" % (status, len(body)), flush=True)
    elif mode == "greedy":
        for i in (1, 2):
            status, body = submit({task["script"]: b"print('not a training script')\n"})
            print("agent: attempt %d: %d %s" % (i, status, body.decode().strip()), flush=True)
    elif mode == "forever":
        print("agent: waiting forever", flush=True)
        while True:
            time.sleep(1)
    elif mode == "llm":
        base = os.environ["OPENAI_BASE_URL"]
        for i in (1, 2, 3):
            req = json.dumps({"model": "stand-in", "messages": [{"role": "user", "content": "make train_gpt2.py faster (%d)" % i}]}).encode()
            r = urllib.request.Request(base + "/chat/completions", data=req, method="POST")
            r.add_header("Authorization", "Bearer " + os.environ["OPENAI_API_KEY"])
            r.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(r, timeout=30) as resp:
                    print("agent: llm call %d: %d %s" % (i, resp.status, resp.read().decode()), flush=True)
            except urllib.error.HTTPError as e:
                print("agent: llm call %d: %d %s" % (i, e.code, e.read().decode()), flush=True)
        for target in sys.argv[2:]:
            host, port = target.rsplit(":", 1)
            s = socket.socket()
            s.settimeout(3)
            try:
                s.connect((host, int(port)))
                print("agent: reach %s: CONNECTED" % target, flush=True)
            except Exception as e:
                print("agent: reach %s: blocked (%s)" % (target, e), flush=True)
            finally:
                s.close()
    print("agent: done", flush=True)


main()
