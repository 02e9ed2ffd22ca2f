"""The API's doors: a 0600 unix socket, and a TCP listener only with a
bearer token."""
import json
import os
import stat
import subprocess
import urllib.error
import urllib.request

from conftest import BIN, Daemon, free_port


def cli_env(d, **extra):
    env = dict(os.environ, SLUICE_STATE_DIR="/nonexistent")
    env.update(extra)
    return env


def run(args, env):
    return subprocess.run([BIN] + args, capture_output=True, text=True, env=env, timeout=120)


def test_unix_socket_is_owner_only(daemon):
    mode = stat.S_IMODE(os.stat(os.path.join(daemon.state_dir, "sluice.sock")).st_mode)
    assert mode == 0o600


def test_tcp_api_needs_the_token(make_daemon, images):
    port = free_port()
    d = make_daemon("--api-listen", "127.0.0.1:%d" % port)
    tok_path = os.path.join(d.state_dir, "api-token")
    assert stat.S_IMODE(os.stat(tok_path).st_mode) == 0o600
    token = open(tok_path).read().strip()
    assert len(token) >= 32
    server = "http://127.0.0.1:%d" % port

    # no token, a wrong token: 401 with a message, nothing done
    r = run(["services"], cli_env(d, SLUICE_SERVER=server))
    assert r.returncode != 0 and "Bearer" in r.stderr
    r = run(["deploy", "x", "--image", images["hello"]],
            cli_env(d, SLUICE_SERVER=server, SLUICE_TOKEN="0" * len(token)))
    assert r.returncode != 0 and "Bearer" in r.stderr
    assert d.json("services")["items"] == []
    with urllib.request.urlopen(server + "/healthz", timeout=5) as resp:
        assert resp.status == 200

    # the right token, from the environment or a file
    r = run(["deploy", "x", "--image", images["hello"]],
            cli_env(d, SLUICE_SERVER=server, SLUICE_TOKEN=token))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "http://x.localhost:%d" % d.port
    r = run(["services", "-o", "json"], cli_env(d, SLUICE_SERVER=server, SLUICE_TOKEN_FILE=tok_path))
    assert r.returncode == 0 and json.loads(r.stdout)["items"][0]["metadata"]["name"] == "x"
    code, _ = d.curl("x", "/")
    assert code == 200


def test_readable_token_file_is_refused(tmp_path):
    tok = tmp_path / "token"
    tok.write_text("a" * 40 + "\n")
    os.chmod(tok, 0o644)
    state = tmp_path / "state"
    r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:%d" % free_port(),
                        "--state-dir", str(state), "--api-listen", "127.0.0.1:%d" % free_port(),
                        "--api-token-file", str(tok)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "readable by others" in r.stderr
