"""The Onedata test server counts as faithful only if the official client works against it."""

from __future__ import annotations

# ruff: noqa: F811 -- fixtures imported from onedata_fixtures are test parameters
import pytest
import requests
from onedatafilerestclient import OnedataFileRESTClient, OnedataRESTError

from tests.storage.onedata_fixtures import onedata_server  # noqa: F401


@pytest.fixture
def official(onedata_server):  # noqa: F811
    """``onedatafilerestclient`` against the test server (it hard-codes https; we pass our CA)."""
    onedata_server.reset()
    return OnedataFileRESTClient(onedata_server.host, onedata_server.token, verify_ssl=onedata_server.ca)


def test_official_client_round_trip(official):
    """Create, write, read a range, list, delete: exactly what the official client does."""
    assert sorted(official.list_spaces()) == ["space1", "space2"]
    file_id = official.create_file("space1", "faithful/dir/file.txt", create_parents=True)
    assert file_id
    official.put_file_content("space1", b"0123456789abcdef", file_path="faithful/dir/file.txt")
    assert official.get_file_content("space1", offset=4, size=6, file_path="faithful/dir/file.txt") == b"456789"
    official.put_file_content("space1", b"XY", offset=2, file_path="faithful/dir/file.txt")  # offset keeps the rest
    assert official.get_file_content("space1", file_path="faithful/dir/file.txt") == b"01XY456789abcdef"
    listing = official.list_children("space1", file_path="faithful/dir")
    assert listing["children"] == [{"name": "file.txt", "type": "REG"}] and listing["isLast"] is True
    attrs = official.get_attributes("space1", file_path="faithful/dir/file.txt")
    assert attrs["fileId"] == file_id and attrs["size"] == 16 and attrs["type"] == "REG"
    assert official.get_attributes("space1", file_path="faithful/dir/file.txt", attributes=["size"]) == {"size": 16}
    official.move("space1", "faithful/dir/file.txt", "space1", "faithful/dir/moved.txt")
    assert [c["name"] for c in official.list_children("space1", file_path="faithful/dir")["children"]] == ["moved.txt"]
    official.remove("space1", file_path="faithful/dir/moved.txt")
    assert official.list_children("space1", file_path="faithful/dir")["children"] == []
    official.remove("space1", file_path="faithful")
    with pytest.raises(OnedataRESTError) as gone:
        official.get_file_id("space1", file_path="faithful")
    assert gone.value.http_code == 400 and gone.value.category == "posix" and gone.value.details == {"errno": "enoent"}


def test_official_client_paginates(official, onedata_server):  # noqa: F811
    official.create_file("space1", "pages", file_type="DIR")
    for i in range(5):
        official.create_file("space1", f"pages/f{i}")
    first = official.list_children("space1", file_path="pages", limit=3)
    assert [c["name"] for c in first["children"]] == ["f0", "f1", "f2"] and first["isLast"] is False
    rest = official.list_children("space1", file_path="pages", limit=3, continuation_token=first["nextPageToken"])
    assert [c["name"] for c in rest["children"]] == ["f3", "f4"] and rest["isLast"] is True
    official.remove("space1", file_path="pages")


def test_wrong_token_is_401_with_onedata_error_shape(onedata_server):  # noqa: F811
    answer = requests.post(f"{onedata_server.url}/api/v3/oneprovider/lookup-file-id/space1",
                           headers={"X-Auth-Token": "MDAxwrong-token-value"}, verify=onedata_server.ca, timeout=10)
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert error["id"] == "unauthorized" and error["details"]["authError"]["id"] == "tokenInvalid"
    assert error["description"]


def test_existing_file_cannot_be_created_twice(official):
    official.create_file("space1", "twice.txt")
    with pytest.raises(OnedataRESTError) as exists:
        official.create_file("space1", "twice.txt")
    assert exists.value.http_code == 400 and exists.value.details == {"errno": "eexist"}
    official.remove("space1", file_path="twice.txt")


def test_temporary_token_needs_a_time_caveat_and_an_idp_token(onedata_server, make_jwt):  # noqa: F811
    url = f"{onedata_server.url}/api/v3/onezone/user/tokens/temporary"
    checkin = {"X-Auth-Token": f"egi:{make_jwt()}"}
    no_caveat = requests.post(url, headers=checkin, json={"type": {"accessToken": {}}}, verify=onedata_server.ca, timeout=10)
    assert no_caveat.status_code == 400 and no_caveat.json()["error"]["id"] == "tokenTimeCaveatRequired"
    import time

    body = {"type": {"accessToken": {}}, "caveats": [{"type": "time", "validUntil": int(time.time()) + 600}]}
    minted = requests.post(url, headers=checkin, json=body, verify=onedata_server.ca, timeout=10)
    assert minted.status_code == 201
    token = minted.json()["token"]
    client = OnedataFileRESTClient(onedata_server.host, token, verify_ssl=onedata_server.ca)
    assert "space1" in client.list_spaces()
    refused = requests.post(url, headers={"X-Auth-Token": "egi:not-a-jwt"}, json=body, verify=onedata_server.ca, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["details"]["authError"]["id"] == "badIdpAccessToken"
