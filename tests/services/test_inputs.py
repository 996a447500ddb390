"""User inputs checked against a process description, then made reachable for the service."""

from __future__ import annotations

import os

import pytest
import requests

from nbplugins import secrets
from nbplugins.errors import ValidationError
from nbplugins.services.inputs import (
    INLINE_LIMIT,
    Complex,
    InputSpec,
    Literal,
    normalise_type,
    parse_assignments,
    prepare,
)

SPECS = (
    InputSpec("InputTable", kind="complex", formats=("text/csv",)),
    InputSpec("Column", data_type="string"),
    InputSpec("Operation", data_type="string", min_occurs=0, allowed=("mean", "max", "min"), default="mean"),
    InputSpec("Rounding", data_type="integer", min_occurs=0),
    InputSpec("Scale", data_type="number", min_occurs=0),
    InputSpec("Verbose", data_type="boolean", min_occurs=0),
    InputSpec("Tags", data_type="string", min_occurs=0, max_occurs=None),
)


def _prepare(values, **kwargs):
    return prepare("CSV_SUMMARY", SPECS, values, **kwargs)


def test_assignments_split_at_the_first_equals_and_repeat_into_lists():
    assert parse_assignments(["a=1", "url=https://x/?q=1", "t=x", "t=y", "t=z", "empty="]) == {
        "a": "1", "url": "https://x/?q=1", "t": ["x", "y", "z"], "empty": ""}
    with pytest.raises(ValidationError, match="expected NAME=VALUE"):
        parse_assignments(["novalue"])


@pytest.mark.parametrize(("word", "kind"), [("xs:integer", "integer"), ("http://www.w3.org/TR/xmlschema-2/#double",
                                                                       "number"), ("float", "number"),
                                            ("boolean", "boolean"), ("string", "string"), (None, "string"),
                                            ("object", "object")])
def test_data_types_of_both_protocols_land_in_one_vocabulary(word, kind):
    assert normalise_type(word) == kind


def test_literals_are_typed_and_urls_pass_by_reference():
    values = _prepare({"InputTable": "https://data.example.org/t.csv", "Column": "a", "Rounding": "2",
                       "Scale": "0.5", "Verbose": "true", "Tags": ["x", "y"]})
    assert values == [
        Complex("InputTable", href="https://data.example.org/t.csv", media_type="text/csv"),
        Literal("Column", "a"), Literal("Rounding", 2), Literal("Scale", 0.5),
        Literal("Verbose", True), Literal("Tags", "x"), Literal("Tags", "y"),
    ]
    assert Literal("Verbose", True).text() == "true"


@pytest.mark.parametrize(("values", "message"), [
    ({"InputTable": "https://x/t.csv", "Column": "a", "Colum": "b"},
     r"CSV_SUMMARY has no input 'Colum' \(inputs: InputTable, Column.*\); did you mean Column\?"),
    ({"InputTable": "https://x/t.csv"}, r"input 'Column' is required"),
    ({"InputTable": "https://x/t.csv", "Column": "a", "Rounding": "two"}, r"'Rounding' must be an integer, got 'two'"),
    ({"InputTable": "https://x/t.csv", "Column": "a", "Scale": "x1"}, r"'Scale' must be a number"),
    ({"InputTable": "https://x/t.csv", "Column": "a", "Verbose": "maybe"}, r"'Verbose' must be true or false"),
    ({"InputTable": "https://x/t.csv", "Column": "a", "Operation": "median"},
     r"'Operation' does not allow 'median' \(allowed: mean, max, min\)"),
    ({"InputTable": ["https://x/a.csv", "https://x/b.csv"], "Column": "a"}, r"'InputTable' takes at most 1 value"),
    ({"InputTable": "ftp://x/t.csv", "Column": "a"}, r"ftp:// inputs are not supported"),
    ({"InputTable": "https://user:pw@x/t.csv", "Column": "a"}, r"credentials in the URL"),
    ({"InputTable": "s3://bucket-only", "Column": "a"}, r"does not name an object"),
])
def test_a_wrong_input_is_one_clear_error_naming_it(values, message):
    with pytest.raises(ValidationError, match=message):
        _prepare(values)


def test_a_onedata_input_says_to_share_it():
    with pytest.raises(ValidationError, match=r"'InputTable'.*share the file.*http\(s\) URL"):
        _prepare({"InputTable": "onedata://space/t.csv", "Column": "a"})


def test_a_local_file_goes_inline_text_or_base64(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    text = _prepare({"InputTable": str(tmp_path / "t.csv"), "Column": "a"})[0]
    assert text == Complex("InputTable", data="a,b\n1,2\n", media_type="text/csv")
    binary = _prepare({"InputTable": f"file://{tmp_path / 'blob.bin'}", "Column": "a"})[0]
    assert binary.encoding == "base64" and binary.media_type == "text/csv"


def test_an_unreadable_or_huge_local_file_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(ValidationError, match=r"'InputTable': .*missing.csv is neither .* nor an existing file"):
        _prepare({"InputTable": str(tmp_path / "missing.csv"), "Column": "a"})
    with pytest.raises(ValidationError, match=r"'InputTable': .* is not a regular file"):
        _prepare({"InputTable": str(tmp_path), "Column": "a"})
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValidationError, match=r"not a regular file"):
        _prepare({"InputTable": str(tmp_path / "fifo"), "Column": "a"})
    big = tmp_path / "big.csv"
    with open(big, "wb") as handle:
        handle.truncate(INLINE_LIMIT + 1)
    with pytest.raises(ValidationError, match=r"more than the 5 MiB sent inline; put it on S3"):
        _prepare({"InputTable": str(big), "Column": "a"})


def test_an_s3_object_becomes_a_presigned_url_the_service_can_read(rclone, bucket, s3_env):
    import boto3

    client = boto3.client("s3", endpoint_url=rclone.url, region_name="us-east-1",
                          aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"])
    client.put_object(Bucket=bucket, Key="in/t.csv", Body=b"a,b\n1,2\n")
    value = _prepare({"InputTable": f"s3://{bucket}/in/t.csv", "Column": "a"})[0]
    assert value.href.startswith(f"{rclone.url}/{bucket}/in/t.csv?") and "X-Amz-Signature" in value.href
    answer = requests.get(value.href, timeout=10)  # no credentials but the URL's own
    assert answer.status_code == 200 and answer.content == b"a,b\n1,2\n"
    assert secrets.redact(value.href) == "***"  # a presigned URL is a secret while it lives
    with pytest.raises(ValidationError, match=r"'InputTable': s3://.*/in/missing.csv does not exist"):
        _prepare({"InputTable": f"s3://{bucket}/in/missing.csv", "Column": "a"})


def test_every_input_is_checked_before_anything_is_presigned(rclone, bucket, s3_env):
    # the object does not exist: presigning first would fail on it, not on Rounding
    with pytest.raises(ValidationError, match="Rounding"):
        _prepare({"InputTable": f"s3://{bucket}/missing.csv", "Column": "a", "Rounding": "x"})


def test_a_required_input_left_out_gets_its_default():
    specs = (InputSpec("Mode", allowed=("fast", "exact"), default="exact"), InputSpec("Other", min_occurs=0))
    assert prepare("P", specs, {}) == [Literal("Mode", "exact")]
