#!/usr/bin/env python3
"""Uploads one file through a tus server with the stock, unmodified `tuspy` client
(PyPI package `tuspy`, module `tusclient`), chunk by chunk, and resumes the way a stock
client does whenever the server goes away: a new uploader on the same upload URL, whose
HEAD tells the offset to go on from.

Driven by tests/tus_stock_client.rs, which SIGKILLs and restarts the server while this runs.
Progress goes to stdout, one line each, flushed at once:

    PATCH <offset>              a chunk is about to be sent from <offset>
    OFFSET <offset>             the chunk was acknowledged; the server's offset is now <offset>
    URL <upload url>            the upload was created (printed once)
    ERROR <offset> <what>       the chunk sent from <offset> failed
    RETRY <what>                the server could not be asked for the offset yet
    RESUMED <n> <offset>        the n-th resume: the server's HEAD answered <offset>
    STORED <file id> <element>  the final PATCH's ArtStore-File-Id and ArtStore-Element-Id
    DONE <upload url>           every byte is in

Usage: stock_client.py URL TOKEN FILE CHUNK_SIZE [--time-limit SECS] [--max-retries N]
       [--checksum]
The exit status is 0 only after DONE.
"""

import argparse
import os
import sys
import time

try:
    from tusclient import client
    from tusclient.exceptions import TusCommunicationError
except ImportError:
    sys.stderr.write(
        "stock_client.py: the tuspy package is missing: run scripts/test.sh "
        "(or python3 -m pip install tuspy)\n"
    )
    sys.exit(3)

import requests


def say(*parts):
    print(*parts, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url", help="the tus creation URL, e.g. http://host:port/api/v1/uploads")
    p.add_argument("token", help="bearer token")
    p.add_argument("file", help="the file to upload")
    p.add_argument("chunk_size", type=int, help="bytes per PATCH")
    p.add_argument("--time-limit", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument(
        "--max-retries", type=int, default=600, help="give up after this many failures in a row"
    )
    p.add_argument("--checksum", action="store_true", help="send Upload-Checksum (sha1) with each chunk")
    a = p.parse_args()

    deadline = time.monotonic() + a.time_limit
    c = client.TusClient(a.url, headers={"Authorization": "Bearer " + a.token})
    metadata = {
        "filename": os.path.basename(a.file),
        "content_type": "application/octet-stream",
        "tags": "tus,stock",
    }
    uploader = c.uploader(
        file_path=a.file, chunk_size=a.chunk_size, metadata=metadata, upload_checksum=a.checksum
    )
    size = uploader.get_file_size()
    upload_url = None
    resumes = 0
    failures = 0

    def give_up(why):
        say("GIVEUP", why)
        sys.exit(2)

    while uploader.offset < size:
        if time.monotonic() > deadline:
            give_up("time limit of %.0f s reached at offset %d" % (a.time_limit, uploader.offset))
        sent_from = uploader.offset
        say("PATCH", sent_from)
        try:
            uploader.upload_chunk()
        except (TusCommunicationError, requests.exceptions.RequestException, OSError) as e:
            failures += 1
            status = getattr(e, "status_code", None)
            say("ERROR", sent_from, "status=%s" % status, type(e).__name__, str(e).replace("\n", " ")[:300])
            if upload_url is None:
                upload_url = uploader.url
            if upload_url is None:
                # Not even created yet: the same uploader creates it on the next try.
                time.sleep(0.2)
                continue
            # Resume as a stock client does: a new uploader on the upload URL asks the
            # server for the offset (HEAD) and goes on from there.
            while True:
                if failures > a.max_retries:
                    give_up("%d failures in a row" % failures)
                if time.monotonic() > deadline:
                    give_up("time limit of %.0f s reached while resuming" % a.time_limit)
                time.sleep(0.2)
                try:
                    uploader = c.uploader(
                        file_path=a.file,
                        url=upload_url,
                        chunk_size=a.chunk_size,
                        upload_checksum=a.checksum,
                    )
                    break
                except (TusCommunicationError, requests.exceptions.RequestException, OSError) as e2:
                    failures += 1
                    say("RETRY", type(e2).__name__, str(e2).replace("\n", " ")[:200])
            resumes += 1
            say("RESUMED", resumes, uploader.offset)
            continue
        failures = 0
        if upload_url is None:
            upload_url = uploader.url
            say("URL", upload_url)
        say("OFFSET", uploader.offset)

    headers = uploader.request.response_headers if uploader.request is not None else {}
    say("STORED", headers.get("artstore-file-id", "-"), headers.get("artstore-element-id", "-"))
    say("DONE", upload_url or uploader.url)


if __name__ == "__main__":
    main()
