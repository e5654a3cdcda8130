#!/usr/bin/env bash
# Run the Dockerfile's steps as a script in a fresh folder, for machines without a Docker engine: a proof that
# the image builds and that the app then starts and works (the embedded model, offline).
#
#   bash scripts/docker_steps.sh            build in a fresh temporary folder, start the app, check it, stop it
#   bash scripts/docker_steps.sh --plan     print what each Dockerfile instruction becomes; run nothing
#
# Options: --dir DIR (an empty folder; default: a new one under /tmp), --port N (default: EXPOSE's port, or a
# free one when it is taken), --build-arg NAME=VALUE, --context git|dir (git: the files a push would carry,
# tracked plus untracked-not-ignored, like a Space's build; dir: the whole folder, like `docker build .`),
# --reuse (with --dir: start and check a folder an earlier run built, running no step again),
# --apt (really run the apt-get steps; root only, and they change this machine), --offline (start the app with
# HF_HUB_OFFLINE=1), --serve (keep the app running), --no-check (no browser check), --keep (keep the folder).
#
# How each instruction is run:
#   FROM      the local python3 stands for the image's Python (same minor version required, warned otherwise)
#   RUN       /bin/sh -c in the current WORKDIR, with exactly the ENV/ARG values seen so far (env -i);
#             apt-get steps are skipped unless --apt (their packages are checked with dpkg instead);
#             `useradd -u N NAME` creates NAME's home in the folder; after `USER NAME`, when this script runs
#             as root, steps run as that uid (setpriv); otherwise as the current user (said in the log)
#   ENV/ARG   kept, with $VAR expansion; WORKDIR is created owned by the current USER (as BuildKit does)
#   COPY      the build context, less .dockerignore's patterns, owned by --chown's user
#   every absolute path under /home/ (ENV, WORKDIR, RUN, CMD, HEALTHCHECK) is moved under <folder>/rootfs/home/
# Then CMD starts the app (log: <folder>/app.log); the script waits for /_stcore/health, runs the
# HEALTHCHECK command, and (with Playwright and /usr/bin/chromium at hand) opens the app in Chromium, with every
# request off this machine blocked: the Home page must draw the embedded model's top-10 next tokens, and a
# file must upload from inside an iframe of another site (what a Space's page is).
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -d '' PROGRAM <<'PY' || true
import json, os, re, shlex, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

REPO = Path.cwd()
args = sys.argv[1:]
opt = {"dir": None, "port": None, "context": "git", "build_args": {}}
flags = set()
while args:
    a = args.pop(0)
    if a in ("--plan", "--reuse", "--apt", "--offline", "--serve", "--no-check", "--keep"):
        flags.add(a[2:])
    elif a in ("--dir", "--port", "--context", "--build-arg") and args:
        v = args.pop(0)
        if a == "--build-arg":
            k, _, val = v.partition("=")
            opt["build_args"][k] = val
        else:
            opt[a[2:]] = v
    else:
        sys.exit(f"docker_steps.sh: unknown option {a!r} (see the comments at the top of the script)")
if opt["context"] not in ("git", "dir"):
    sys.exit("docker_steps.sh: --context is git or dir")
PLAN = "plan" in flags
REUSE = "reuse" in flags and not PLAN     # start and check a folder built before: no step is run again
DRY = PLAN or REUSE
if REUSE and not (opt["dir"] and (Path(opt["dir"]) / "rootfs").is_dir()):
    sys.exit("docker_steps.sh: --reuse needs --dir, a folder built by an earlier run")
IS_ROOT = os.geteuid() == 0
CAN_SWITCH = IS_ROOT and shutil.which("setpriv") is not None

# ----------------------------------------------------------------------------- the Dockerfile
def instructions(text):
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip(), buf.strip()))
        buf = ""
    return out

VAR = re.compile(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))")
def expand(s, env):
    return VAR.sub(lambda m: env.get(m.group(1) or m.group(3), m.group(2) or ""), s)

if opt["dir"]:
    WORK = Path(opt["dir"]).resolve()
else:  # --plan creates nothing: it names a folder it would make
    WORK = Path("/tmp/llmx-docker-XXXXXX") if PLAN else Path(tempfile.mkdtemp(prefix="llmx-docker-"))
ROOTFS = WORK / "rootfs"
HOME_PATH = re.compile(r"(?<![\w./-])/home/")
def remap(s):
    return HOME_PATH.sub(str(ROOTFS) + "/home/", s)

BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "HOME": "/root"}   # what python:3.11-slim sets

def dockerignore_patterns():
    f = REPO / ".dockerignore"
    pats = []
    for line in (f.read_text().splitlines() if f.is_file() else []):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        p = line[1:] if neg else line
        p = p.strip("/")
        rx = ""
        i = 0
        while i < len(p):
            if p.startswith("**/", i):
                rx += "(?:.*/)?"; i += 3
            elif p.startswith("**", i):
                rx += ".*"; i += 2
            elif p[i] == "*":
                rx += "[^/]*"; i += 1
            elif p[i] == "?":
                rx += "[^/]"; i += 1
            else:
                rx += re.escape(p[i]); i += 1
        pats.append((neg, re.compile(rx + "(?:/.*)?$")))  # a folder's pattern covers what it holds
    return pats

def context_files():
    if opt["context"] == "git":
        done = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, cwd=REPO)
        if done.returncode == 0:
            return _filtered([f for f in done.stdout.decode().split("\0") if f and (REPO / f).is_file()])
        why = (done.stderr.decode().strip().splitlines() or ["git failed"])[0]
        log(f"git cannot list the files ({why[:120]}): the whole folder is the context")
        opt["context"] = "dir"
    pats, found, unreadable = dockerignore_patterns(), [], 0
    prune = not any(neg for neg, _ in pats)  # an ignored folder is not walked (unless a `!` pattern may reach in)
    for root, dirs, files in os.walk(REPO):
        base = os.path.relpath(root, REPO)
        rel = (lambda n: n) if base == "." else (lambda n, b=base: f"{b}/{n}")
        dirs[:] = [d for d in dirs if not (prune and _ignored(rel(d), pats))]
        for n in files:
            if os.access(os.path.join(root, n), os.R_OK):
                found.append(rel(n))
            else:
                unreadable += 1
    if unreadable:
        log(f"{unreadable} files of the folder cannot be read by this user: left out")
    return _filtered(found)

def _ignored(path, pats):
    ignored = False
    for neg, rx in pats:
        if rx.match(path):
            ignored = not neg
    return ignored

def _filtered(files):
    pats = dockerignore_patterns()
    return [f for f in sorted(set(files)) if f != ".dockerignore" and not _ignored(f, pats)]

# ----------------------------------------------------------------------------- state while building
env = dict(BASE_ENV)      # ENV so far
args_env = {}             # ARG so far (RUN sees them, the running app does not)
users = {"root": 0}
user = "root"
workdir = "/"
expose, cmd, health = [], None, None
steps = []                # (title, seconds, note)

def uid_of(name):
    return users.get(name, int(name) if str(name).isdigit() else 0)

def host_path(p):
    return Path(remap(p))

def as_user_prefix():
    uid = uid_of(user)
    if uid == os.geteuid():
        return [], f"as uid {uid}"
    if CAN_SWITCH:
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"], f"as uid {uid} (setpriv)"
    return [], f"as uid {os.geteuid()} (USER {user} is uid {uid}: not root, cannot switch)"

def chown(path, uid):
    if IS_ROOT:
        for root, dirs, files in os.walk(path):
            for n in [*dirs, *files]:
                os.lchown(os.path.join(root, n), uid, uid)
        os.lchown(path, uid, uid)

def log(msg):
    print(f"==> {msg}", flush=True)

def run_shell(command, note_title):
    prefix, who = as_user_prefix()
    full_env = {**args_env, **env}
    argv = [*prefix, "env", "-i", *[f"{k}={remap(v)}" for k, v in full_env.items()], "/bin/sh", "-c", remap(command)]
    if DRY:
        return f"run {who} in {remap(workdir)}: {remap(command)}"
    t0 = time.perf_counter()
    log(f"RUN {who}: {command}")
    done = subprocess.run(argv, cwd=host_path(workdir))
    dt = time.perf_counter() - t0
    if done.returncode != 0:
        steps.append((note_title, dt, f"FAILED (exit {done.returncode})"))
        report()
        sys.exit(f"docker_steps.sh: step failed: RUN {command}")
    return f"ran {who} in {dt:.0f} s"

def report():
    print("\n---- steps (seconds) ----")
    for title, dt, note in steps:
        print(f"{dt:8.1f}  {title[:90]}\n          {note}")
    print(f"{sum(s[1] for s in steps):8.1f}  total build")

def apt_packages(command):
    words = command.replace("&&", " && ").split()
    pk, on = [], False
    for w in words:
        if w == "install":
            on = True
        elif w == "&&":
            on = False
        elif on and not w.startswith("-"):
            pk.append(w)
    return pk

# ----------------------------------------------------------------------------- build
dockerfile = (REPO / "Dockerfile").read_text()
if REUSE:
    log(f"reusing the build in {WORK}: no step is run again")
elif not PLAN:
    WORK.mkdir(parents=True, exist_ok=True)
    if any(WORK.iterdir()):
        sys.exit(f"docker_steps.sh: {WORK} is not empty: give an empty or new folder")
    os.chmod(WORK, 0o755)
    (ROOTFS / "home").mkdir(parents=True)
    log(f"fresh folder {WORK} (image paths under /home/ live in {ROOTFS}/home/)")
build_start = time.perf_counter()
for word, rest, text in instructions(dockerfile):
    t0 = time.perf_counter()
    note = ""
    if word == "FROM":
        image = rest.split()[0]
        m = re.match(r"python:(\d+\.\d+)", image)
        local = shutil.which("python3", path=BASE_ENV["PATH"])
        version = subprocess.run([local, "--version"], capture_output=True, text=True).stdout.split()[-1] if local else "?"
        note = f"stands in: {local} (Python {version}), first python3 on the image's PATH"
        if m and not version.startswith(m.group(1) + "."):
            note += f" (WARNING: the image has Python {m.group(1)})"
    elif word == "ARG":
        name, _, default = rest.partition("=")
        args_env[name] = opt["build_args"].get(name, expand(default, {**args_env, **env}))
        note = f"{name}={args_env[name]}"
    elif word == "ENV":
        before = {**args_env, **env}
        tokens = shlex.split(rest)
        pairs = [t.partition("=") for t in tokens] if "=" in tokens[0] else [(tokens[0], "=", " ".join(tokens[1:]))]
        for k, _, v in pairs:
            env[k] = expand(v, before)
        note = "; ".join(f"{k}={remap(env[k])}" for k, _, _ in pairs)
    elif word == "WORKDIR":
        workdir = expand(rest, {**args_env, **env})
        note = f"{remap(workdir)} (owned by uid {uid_of(user)})"
        if not DRY:
            host_path(workdir).mkdir(parents=True, exist_ok=True)
            chown(host_path(workdir), uid_of(user))
    elif word == "USER":
        user = expand(rest, env).split(":")[0]
        prefix, who = as_user_prefix()
        note = f"later steps run {who}"
    elif word == "COPY":
        parts = shlex.split(rest)
        owner = next((p.split("=", 1)[1] for p in parts if p.startswith("--chown=")), None)
        paths = [expand(p, {**args_env, **env}) for p in parts if not p.startswith("--")]
        srcs, dest = paths[:-1], paths[-1]
        if srcs != ["."]:
            sys.exit(f"docker_steps.sh: only `COPY . <dest>` is supported (got {text})")
        target = host_path(dest if dest.startswith("/") else os.path.join(workdir, dest))
        files = context_files()
        note = f"{len(files)} files of the {opt['context']} context (less .dockerignore) -> {target}"
        if owner:
            note += f", owned by {owner} (uid {uid_of(owner.split(':')[0])})"
        if not DRY:
            for f in files:
                (target / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / f, target / f, follow_symlinks=False)
            chown(target, uid_of(owner.split(":")[0]) if owner else 0)
    elif word == "RUN":
        if re.match(r"^\s*apt(-get)?\s", rest):
            pk = apt_packages(rest)
            if "apt" in flags and IS_ROOT and not DRY:
                note = run_shell(rest, text)
            else:
                missing = [p for p in pk if not shutil.which(p) and
                           subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
                note = (f"skipped (apt-get would change this machine; --apt runs it): packages {' '.join(pk)} "
                        + ("are installed here" if not missing else f"MISSING here: {' '.join(missing)}"))
        elif re.match(r"^\s*useradd\s", rest):
            words = shlex.split(rest)
            name = words[-1]
            uid = int(words[words.index("-u") + 1]) if "-u" in words else 1000
            users[name] = uid
            home = ROOTFS / "home" / name
            note = f"skipped on this machine: {name} is uid {uid}, home {home}"
            if not DRY:
                home.mkdir(parents=True, exist_ok=True)
                chown(home, uid)
        else:
            note = run_shell(rest, text)
    elif word == "EXPOSE":
        expose = [p.split("/")[0] for p in rest.split()]
        note = f"port {' '.join(expose)}"
    elif word == "HEALTHCHECK":
        m = re.search(r"\bCMD\s+(.*)$", rest)
        health = json.loads(m.group(1)) if m else None
        note = "kept: run once the app answers"
    elif word == "CMD":
        cmd = json.loads(rest)
        note = "kept: starts the app after the build"
    else:
        note = "ignored"
    steps.append((text, time.perf_counter() - t0, note))
    if PLAN:
        print(f"{word:<11} {text[len(word):].strip()[:100]}\n            -> {note}")

if PLAN:
    print(f"CMD then    {' '.join(remap(c) for c in cmd or [])}")
    sys.exit(0)
build_seconds = time.perf_counter() - build_start
if not REUSE:
    report()

# ----------------------------------------------------------------------------- start and check
def port_free(p):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(p))) != 0

port = opt["port"] or (expose[0] if expose else "8501")
if not opt["port"] and not port_free(port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    log(f"port {expose[0]} is taken on this machine: using {port}")
def with_port(argv):
    out = [remap(a) for a in argv]
    for i, a in enumerate(out):
        if i and out[i - 1] == "--server.port":
            out[i] = port
        elif expose:
            out[i] = a.replace(f":{expose[0]}/", f":{port}/")
    return out

run_env = dict(env)
if "offline" in flags:
    run_env["HF_HUB_OFFLINE"] = "1"
prefix, who = as_user_prefix()
app_log = open(WORK / "app.log", "w")
argv = [*prefix, "env", "-i", *[f"{k}={remap(v)}" for k, v in run_env.items()], *with_port(cmd)]
log(f"CMD {who}: {' '.join(with_port(cmd))}")
t0 = time.perf_counter()
app = subprocess.Popen(argv, cwd=host_path(workdir), stdout=app_log, stderr=subprocess.STDOUT, start_new_session=True)
url = f"http://127.0.0.1:{port}"
failures = []

def stop():
    if app.poll() is None:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)

try:
    healthy = None
    while time.perf_counter() - t0 < 180 and app.poll() is None:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    healthy = time.perf_counter() - t0
                    break
        except OSError:
            time.sleep(0.5)
    if healthy is None:
        failures.append("the app did not answer /_stcore/health (see app.log)")
    else:
        log(f"GET {url}/_stcore/health -> ok, {healthy:.1f} s after CMD")
        if health:
            h = subprocess.run([*prefix, "env", "-i", *[f"{k}={remap(v)}" for k, v in run_env.items()],
                                *with_port(health)], capture_output=True, text=True)
            log(f"HEALTHCHECK -> exit {h.returncode}")
            if h.returncode:
                failures.append(f"HEALTHCHECK exited {h.returncode}: {h.stderr.strip()[-200:]}")
        (WORK / "check_app.py").write_text(os.environ.get("DOCKER_STEPS_CHECK", ""), encoding="utf-8")
        checker = os.environ.get("CHECK_PYTHON") or str(REPO / ".venv" / "bin" / "python")
        usable = (Path(checker).exists() and Path("/usr/bin/chromium").exists() and
                  subprocess.run([checker, "-c", "import playwright.sync_api"], capture_output=True).returncode == 0)
        if "no-check" in flags:
            log("browser check: skipped (--no-check)")
        elif not usable:
            log(f"browser check: skipped (needs Playwright in {checker} and /usr/bin/chromium)")
        else:
            done = subprocess.run([checker, str(WORK / "check_app.py"), url, str(WORK)])
            if done.returncode:
                failures.append("the browser check failed (see above)")
    if "serve" in flags and not failures:
        log(f"serving on {url} (Ctrl-C stops it)")
        app.wait()
finally:
    stop()
    app_log.close()
print(f"\n{'reused build' if REUSE else f'build {build_seconds:.0f} s'}; folder {WORK}; app log {WORK / 'app.log'}")
if failures:
    print("FAILED: " + "; ".join(failures))
    sys.exit(1)
print("OK: the Dockerfile's steps built and the app answered")
if "keep" not in flags and not opt["dir"]:
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"(removed {WORK}; --keep keeps it)")
PY

# The browser check (run by the Python above with a Python that has Playwright; written next to the build).
read -r -d '' CHECK <<'PY' || true
"""Chromium, offline: the embedded model draws on Home, and a file uploads from a cross-site iframe."""
import http.server, json, re, socket, sys, threading, time
from pathlib import Path
from playwright.sync_api import sync_playwright

url, work = sys.argv[1], Path(sys.argv[2])
port = url.rsplit(":", 1)[1]
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update"]
LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")
ok = True

def idle(page, frame=None, timeout=180):
    deadline = time.time() + timeout
    time.sleep(2)
    where = frame or page
    while time.time() < deadline:
        if where.locator("[data-testid='stStatusWidget']").count() == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("the app was still running")

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(LOCAL) else r.abort())
    # 1. Home, top level: the default (embedded) model runs and draws its top-10 next tokens
    t0 = time.time()
    page.goto(url + "/?lang=en")
    page.wait_for_selector(".js-plotly-plot .bars .point", timeout=240_000)
    idle(page)
    drawn = time.time() - t0
    bars = page.locator(".js-plotly-plot .bars .point").count()
    text = page.inner_text("body")
    errors = page.locator("[data-testid='stException']").count()
    page.screenshot(path=str(work / "home.png"), full_page=True)
    model = next((m for m in ("Gemma 3 270M", "SmolLM2-135M") if m in text), None)
    good = bars == 10 and errors == 0 and model is not None
    ok &= good
    print(json.dumps({"check": "home", "ok": good, "seconds_to_draw": round(drawn, 1), "top_bars": bars,
                      "model": model, "exceptions": errors, "screenshot": str(work / "home.png")}), flush=True)

    # 2. an upload from inside an iframe of another site (127.0.0.1 frames localhost), as a Space's page does
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        outer = s.getsockname()[1]
    frame_src = f"http://localhost:{port}/Data?lang=en&data.source=upload"
    body = (f'<!doctype html><title>outer site</title><iframe src="{frame_src}" width="1350" height="950" '
            f'allow="clipboard-write"></iframe>').encode()

    class Outer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", outer), Outer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    puts = []
    page.on("response", lambda r: puts.append(r.status)
            if "/_stcore/upload_file/" in r.url and r.request.method == "PUT" else None)
    page.goto(f"http://127.0.0.1:{outer}/")
    frame = page.frame_locator("iframe")
    dropzone = frame.locator("[data-testid='stFileUploaderDropzoneInput']")
    dropzone.wait_for(state="attached", timeout=120_000)
    sample = work / "classe.txt"
    sample.write_text("Le chat dort sur le canapé.\n\nLa pluie tombe sur la ville.\n", encoding="utf-8")
    dropzone.set_input_files(str(sample))
    try:  # the app read the file: the Data page counts its two documents (lang=en)
        frame.get_by_text(re.compile(r"classe\.txt: 2 document")).first.wait_for(timeout=120_000)
        read = True
    except Exception:  # noqa: BLE001 - a refused upload never gets there
        read = False
    good = read and bool(puts) and all(200 <= s < 300 for s in puts)
    ok &= good
    page.screenshot(path=str(work / "upload_in_iframe.png"), full_page=True)
    print(json.dumps({"check": "upload in a cross-site iframe", "ok": good, "put_status": puts,
                      "app_read_the_file": read, "screenshot": str(work / "upload_in_iframe.png")}), flush=True)
    server.shutdown()
    browser.close()
sys.exit(0 if ok else 1)
PY

export DOCKER_STEPS_CHECK="$CHECK"
exec python3 -c "$PROGRAM" "$@"
