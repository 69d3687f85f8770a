"""Fidelity: the official COS SDK (cos-python-sdk-v5) drives the emulator through query, list, create and cancel.

The SDK signs with its own signer and sends ``Host: <bucket>.cos.<region>.myqcloud.com``, so these tests check our
signature verification and host handling against an implementation we did not write.
"""

from __future__ import annotations

import logging

import pytest
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosServiceError

from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_SECRET_ID, TEST_SECRET_KEY

logging.getLogger("qcloud_cos").setLevel(logging.CRITICAL)  # it logs every error body at ERROR

WORKFLOW_BODY = {
    "Name": "demo-workflow",
    "Type": "Workflow",
    "Input": {"Prefix": "input"},
    "Operation": {
        "TimeInterval": {"Start": "2022-02-01T12:00:00+0800", "End": "2022-05-01T12:00:00+0800"},
        "WorkflowIds": "w7476ff3564ee45b7b490d64bccaba6cc",
    },
}
JOB_BODY = {
    "Name": "演示_job-1",
    "Type": "Job",
    "Input": {"Prefix": "input"},
    "Operation": {
        "QueueId": "p893bcda225bf4945a378da6662e81a89",
        "Tag": "Transcode",
        "JobParam": {"TemplateId": "t1460606b9752148c4ab182f55163ba7cd"},
        "Output": {"Region": "ap-chongqing", "Bucket": "test-1234567890",
                   "Object": "output/${InventoryTriggerJobId}/out.mp4"},
        "JobLevel": "0",
    },
}


def sdk(emulator, secret_id=TEST_SECRET_ID, secret_key=TEST_SECRET_KEY, token=None) -> CosS3Client:
    cfg = CosConfig(Region=TEST_REGION, SecretId=secret_id, SecretKey=secret_key, Token=token, Scheme="http",
                    IP="127.0.0.1", Port=emulator.port)
    return CosS3Client(cfg, retry=0)


def test_create_both_variants_then_query(emulator):
    client = sdk(emulator)
    wf = client.ci_create_inventory_trigger_jobs(Bucket=TEST_BUCKET, JobBody=WORKFLOW_BODY)
    job = client.ci_create_inventory_trigger_jobs(Bucket=TEST_BUCKET, JobBody=JOB_BODY)
    wf_detail, job_detail = wf["JobsDetail"][0], job["JobsDetail"][0]
    assert wf_detail["State"] == "Submitted" and wf_detail["Type"] == "Workflow"
    assert wf_detail["Operation"]["WorkflowIds"] == "w7476ff3564ee45b7b490d64bccaba6cc"
    assert job_detail["Name"] == "演示_job-1" and job_detail["Operation"]["Tag"] == "Transcode"
    assert job_detail["Operation"]["Output"]["Bucket"] == "test-1234567890"

    got = client.ci_get_inventory_trigger_jobs(Bucket=TEST_BUCKET, JobID=wf_detail["JobId"])
    assert [d["JobId"] for d in got["JobsDetail"]] == [wf_detail["JobId"]]
    assert got["JobsDetail"][0]["CreationTime"] == "2026-01-01T08:00:00+0800"
    assert got["JobsDetail"][0]["StartTime"] == "-"
    assert "NonExistJobIds" not in got
    # The emulator saw the SDK's COS host and still filed both jobs under the bucket.
    assert {r.bucket for r in emulator.request_log} == {TEST_BUCKET}


def test_query_unknown_id_answers_non_exist(emulator):
    got = sdk(emulator).ci_get_inventory_trigger_jobs(Bucket=TEST_BUCKET, JobID="b00000000000000000000000000000000")
    assert got["NonExistJobIds"] == "b00000000000000000000000000000000"
    assert got.get("JobsDetail", []) == []


def test_list_filters_by_type_and_pages(emulator):
    client = sdk(emulator)
    ids = [emulator.create_job(TEST_BUCKET, name=f"j{i}", type="Job") for i in range(3)]
    emulator.create_job(TEST_BUCKET, name="wf", type="Workflow")
    first = client.ci_list_inventory_trigger_jobs(Bucket=TEST_BUCKET, Type="Job", Size=2)
    assert len(first["JobsDetail"]) == 2 and first["NextToken"]
    rest = client.ci_list_inventory_trigger_jobs(Bucket=TEST_BUCKET, Type="Job", Size=2,
                                                 NextToken=first["NextToken"])
    seen = [d["JobId"] for d in first["JobsDetail"] + rest["JobsDetail"]]
    assert sorted(seen) == sorted(ids)
    assert not rest.get("NextToken")
    # The SDK's default type is Workflow: it hides the Job-type jobs.
    default = client.ci_list_inventory_trigger_jobs(Bucket=TEST_BUCKET)
    assert [d["Name"] for d in default["JobsDetail"]] == ["wf"]


def test_cancel_with_the_sdks_unsigned_cancel_parameter(emulator):
    job_id = emulator.create_job(TEST_BUCKET, state="Running")
    rt = sdk(emulator).ci_delete_inventory_trigger_jobs(Bucket=TEST_BUCKET, JobId=job_id)
    assert rt.status_code == 200 and rt.content == b"" and rt.headers["x-ci-request-id"]
    assert emulator.job_state(TEST_BUCKET, job_id) == "Cancel"


def test_temporary_credentials_through_the_sdk(emulator):
    tmp_id, tmp_key, token = emulator.issue_token(TEST_SECRET_ID)
    ok = sdk(emulator, tmp_id, tmp_key, token).ci_list_inventory_trigger_jobs(Bucket=TEST_BUCKET, Type="Job")
    assert ok.get("JobsDetail", []) == []
    with pytest.raises(CosServiceError) as err:
        sdk(emulator, tmp_id, tmp_key, token + "x").ci_list_inventory_trigger_jobs(Bucket=TEST_BUCKET)
    assert err.value.get_status_code() == 403


@pytest.mark.parametrize("secret_id,secret_key,code", [
    (TEST_SECRET_ID, "wrong-key", "SignatureDoesNotMatch"),
    ("AKIDUNKNOWN000000000000000000000000", TEST_SECRET_KEY, "InvalidAccessKeyId"),
])
def test_sdk_with_bad_credentials_is_refused(emulator, secret_id, secret_key, code):
    with pytest.raises(CosServiceError) as err:
        sdk(emulator, secret_id, secret_key).ci_get_inventory_trigger_jobs(Bucket=TEST_BUCKET, JobID="b1")
    assert err.value.get_status_code() == 403
    # The SDK's parser expects COS's <Resource> node; CI's body lacks it, so read the code from the raw body.
    assert emulator.request_log[-1].status == 403
    raw_body = err.value.args[1]
    assert f"<Code>{code}</Code>" in raw_body and "<Resource>" not in raw_body
