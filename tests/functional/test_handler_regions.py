"""Regions through the function's real entry (``main_handler``, SQLite, the emulator over HTTP): a malformed
region in one queue record costs that record only, named with its value; a well-formed region this version does
not know is tracked (never dropped) and logged as ``region_unknown``; API Gateway answers 400 naming the field."""

from __future__ import annotations

import json

from fixtures.emulator import TEST_BUCKET, TEST_REGION
from test_handler import API_KEY, _handler_logging, harness, json_lines, load_event, with_api_key  # noqa: F401

TOO_LONG = "ap-" + "x" * 20 + "-" + "y" * 10  # the old pattern's shape, longer than the store's 32 characters


def test_a_batch_with_a_malformed_and_an_unknown_region_tracks_the_rest(harness, capsys):
    ids = harness.create(3)
    records = [{"bucket": TEST_BUCKET, "region": TOO_LONG, "job_id": ids[0]},
               {"bucket": TEST_BUCKET, "region": TEST_REGION, "job_id": ids[1]},
               {"bucket": TEST_BUCKET, "region": "ap-newcity", "job_id": ids[2]}]
    capsys.readouterr()
    out = harness.invoke({"Records": [{"Ckafka": {"msgBody": json.dumps(r)}} for r in records]})
    assert out["ok"] and out["registered"] == 2, out
    (rejected,) = out["rejected"]
    assert rejected["index"] == 0 and "invalid region" in rejected["reason"] and TOO_LONG in rejected["reason"]
    assert sorted(str(t.key) for t in harness.store.list_jobs()) == \
        sorted([f"{TEST_REGION}/{TEST_BUCKET}/{ids[1]}", f"ap-newcity/{TEST_BUCKET}/{ids[2]}"])
    warned = [l for l in json_lines(capsys.readouterr().out) if l.get("event") == "region_unknown"]
    assert [(l["level"], l["field"], l["region"]) for l in warned] == [("warning", "region", "ap-newcity")]


def test_api_gateway_answers_400_naming_the_region_field(harness):
    job = harness.create(1)[0]
    reg = load_event("apigw_register.json", [job])
    reg["body"] = json.dumps({"bucket": TEST_BUCKET, "region": TOO_LONG, "job_ids": [job]})
    resp = harness.invoke(with_api_key(reg, API_KEY))
    assert resp["statusCode"] == 400 and TOO_LONG in json.loads(resp["body"])["error"]

    read = load_event("apigw_status.json", [job])
    read["queryString"] = read["queryStringParameters"] = {"region": TOO_LONG, "bucket": TEST_BUCKET}
    resp = harness.invoke(with_api_key(read, API_KEY))
    assert resp["statusCode"] == 400 and f"invalid region {TOO_LONG!r}" in json.loads(resp["body"])["error"]

    cb = load_event("callback_apigw.json")
    cb["body"] = cb["body"].replace("test-123456789", TEST_BUCKET).replace("ap-chongqing", TOO_LONG)
    resp = harness.invoke(cb)
    assert resp["statusCode"] == 400 and f"invalid Input.Region {TOO_LONG!r}" in json.loads(resp["body"])["error"]

    cb = load_event("callback_apigw.json")
    cb["body"] = cb["body"].replace("test-123456789", TEST_BUCKET).replace("ap-chongqing", TEST_REGION)
    cb["queryString"] = cb["queryStringParameters"] = {"region": TOO_LONG}
    resp = harness.invoke(cb)
    assert resp["statusCode"] == 400 and f"invalid ?region {TOO_LONG!r}" in json.loads(resp["body"])["error"]
    assert harness.store.list_jobs() == []
