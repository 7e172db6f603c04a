# oras_roundtrip.py: the oras-py half of Berth's end-to-end tests (crates/berth/tests/e2e_clients.rs).
#
# Usage: python oras_roundtrip.py MODE HOST USER PASSWORD TARGET FILE OUTDIR CHUNK_SIZE [AUTH_BACKEND]
#   MODE push      log in (basic credentials) and push FILE to TARGET (HOST/repo:tag) over plain
#                  HTTP with a chunked upload (POST, PATCH per CHUNK_SIZE bytes, PUT)
#   MODE roundtrip push as above, then pull TARGET into OUTDIR
# AUTH_BACKEND is oras-py's: "basic" (default: Basic credentials on every request after a 401)
# or "token" (the Docker token flow through the realm of the 401 challenge).
# FILE is relative to the current folder (oras-py only pushes files below it).
# Prints one JSON line {"push_status": ..., "pulled": [...]} on success. On an oras error it
# prints "ORAS ERROR: <type>: <message>" to stderr and exits 3.
import json
import os
import sys

import oras.client


def main():
    mode, host, user, password, target, path, outdir, chunk = sys.argv[1:9]
    backend = sys.argv[9] if len(sys.argv) > 9 else "basic"
    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend=backend)
    client.login(
        username=user,
        password=password,
        hostname=host,
        config_path=os.path.join(os.getcwd(), "oras-docker-config.json"),
    )
    result = {}
    try:
        resp = client.push(
            target=target,
            files=[path + ":application/vnd.berth.test.file"],
            do_chunked=True,
            chunk_size=int(chunk),
            quiet=True,
        )
        result["push_status"] = resp.status_code
        if resp.status_code != 201:
            raise RuntimeError(f"manifest PUT answered {resp.status_code}: {resp.text}")
        if mode == "roundtrip":
            result["pulled"] = client.pull(target=target, outdir=outdir)
    except Exception as e:  # noqa: BLE001 - report any oras failure to the Rust test
        print(f"ORAS ERROR: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
