"""supabase-js (under Deno) against the Auth email flows and signing keys (issue 14 §2):
tests/js_auth/email_and_keys.test.ts, with the test stack, its mail catcher and a second gateway
signing with an ES256 key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import deno
import inbox
from auth_gateway import auth_gateway

from app.stack import signing_keys
from app.stack.keys import StackKeys

JS_TESTS = Path(__file__).with_name("js_auth")


def test_supabase_js_email_flows_and_signing_keys_pass(
    stack: object, api_url: str, keys: StackKeys, tmp_path: Path
):
    key_file = tmp_path / "signing_keys.json"
    signing_keys.write(key_file, [signing_keys.generate("ES256")])
    with auth_gateway({"TOKENMETER_AUTH_SIGNING_KEYS_PATH": str(key_file)}) as es256_url:
        env = dict(
            os.environ,
            SUPABASE_URL=api_url,
            SUPABASE_ANON_KEY=keys.anon_key,
            MAIL_URL=inbox.catcher_url(),
            ES256_URL=es256_url,
            NO_COLOR="1",
        )
        result = subprocess.run(
            [str(deno.find_deno_bin()), "test", "--allow-all", str(JS_TESTS)],
            env=env,
            cwd=JS_TESTS.parents[1],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed | 0 failed" in result.stdout, result.stdout
