import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from llmbook import data
from llmbook.data import (
    REGISTRY,
    DataIntegrityError,
    DataNotFoundError,
    data_path,
    strip_gutenberg,
)

SHARED = Path(os.environ.get("LLMBOOK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (SHARED / "SOURCES.md").is_file(), reason="set LLMBOOK_DATA to the data folder")


@needs_data
def test_registry_lists_every_file_in_sources_md():
    import re

    sources = (SHARED / "SOURCES.md").read_text()
    listed = set(re.findall(r"^\| ([a-z]+/[^ |]+) \| [0-9a-f]{64} \|", sources, re.MULTILINE))
    assert listed <= set(REGISTRY)
    on_disk = {str(p.relative_to(SHARED)) for p in SHARED.rglob("*") if p.is_file() and p.name != "SOURCES.md"}
    assert on_disk == set(REGISTRY)


@needs_data
def test_every_local_file_matches_its_sha256():
    for rel, entry in REGISTRY.items():
        assert hashlib.sha256((SHARED / rel).read_bytes()).hexdigest() == entry.sha256, rel


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMBOOK_DATA", raising=False)
    monkeypatch.delenv("LLMBOOK_OFFLINE", raising=False)
    return tmp_path


def fake_network(monkeypatch, payloads):
    calls = []

    def fetch(url, timeout=60.0):
        calls.append(url)
        if url not in payloads:
            raise OSError("network is unreachable")
        return payloads[url]

    monkeypatch.setattr(data, "_fetch", fetch)
    return calls


def test_offline_without_a_copy_names_the_variable(isolated, monkeypatch):
    fake_network(monkeypatch, {})
    with pytest.raises(DataNotFoundError, match="LLMBOOK_DATA"):
        data_path("text/the-verdict/the-verdict.txt")
    monkeypatch.setenv("LLMBOOK_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match="not available offline"):
        data_path("text/the-verdict/the-verdict.txt")


@needs_data
def test_download_is_verified_cached_and_then_used_offline(isolated, monkeypatch):
    rel = "text/the-verdict/the-verdict.txt"
    payload = (SHARED / rel).read_bytes()
    calls = fake_network(monkeypatch, {REGISTRY[rel].url: payload})
    path = data_path(rel)
    assert path == isolated / "cache" / rel and path.read_bytes() == payload
    fake_network(monkeypatch, {})
    assert data_path(rel) == path and len(calls) == 1


def test_a_corrupt_download_writes_nothing(isolated, monkeypatch):
    rel = "text/the-verdict/the-verdict.txt"
    fake_network(monkeypatch, {REGISTRY[rel].url: b"<html>rate limited</html>"})
    with pytest.raises(DataIntegrityError, match="sha256"):
        data_path(rel)
    assert not (isolated / "cache" / rel).exists()
    assert not [p for p in (isolated / "cache").rglob("*") if p.is_file()]  # no temporary either


def test_an_interrupted_download_leaves_no_file(isolated, monkeypatch):
    rel = "text/the-verdict/the-verdict.txt"
    payload = b"x"
    monkeypatch.setitem(REGISTRY, rel, data.DataFile(rel, hashlib.sha256(payload).hexdigest(), "https://x"))
    fake_network(monkeypatch, {"https://x": payload})

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data_path(rel)
    assert not [p for p in (isolated / "cache").rglob("*") if p.is_file()]
    monkeypatch.undo()


@needs_data
def test_zip_member_is_extracted_and_checked(isolated, monkeypatch):
    rel = "classification/sms_spam_collection/SMSSpamCollection"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("SMSSpamCollection", (SHARED / rel).read_bytes())
    entry = REGISTRY[rel]
    # Our zip is not byte-identical to UCI's, so check only the member's sha256 here.
    monkeypatch.setitem(REGISTRY, rel, type(entry)(entry.path, entry.sha256, entry.url, entry.member, None))
    fake_network(monkeypatch, {entry.url: buf.getvalue()})
    assert data_path(rel).read_bytes() == (SHARED / rel).read_bytes()


@needs_data
def test_local_folder_wins_and_damage_is_reported(tmp_path, monkeypatch):
    rel = "text/the-verdict/the-verdict.txt"
    monkeypatch.setenv("LLMBOOK_DATA", str(SHARED))
    assert data_path(rel) == SHARED / rel
    bad = tmp_path / "data"
    (bad / rel).parent.mkdir(parents=True)
    (bad / rel).write_text("not the verdict")
    monkeypatch.setenv("LLMBOOK_DATA", str(bad))
    with pytest.raises(DataIntegrityError, match="delete it"):
        data_path(rel)


def test_unknown_file_is_a_key_error():
    with pytest.raises(KeyError, match="not a registered data file"):
        data_path("text/missing.txt")


@needs_data
def test_gutenberg_header_and_footer_are_stripped():
    raw = data.read_text("text/gutenberg/11-0.txt")
    body = strip_gutenberg(raw)
    assert "Project Gutenberg" in raw[:2000] and "START OF" not in body and "END OF" not in body
    assert body.lstrip().startswith("ALICE") and "Alice was beginning to get very tired" in body
    assert "\r" not in body and len(body) > 0.8 * len(raw)
    with pytest.raises(ValueError, match="Gutenberg"):
        strip_gutenberg("just some text")


@needs_data
def test_corpora():
    books = data.load_corpus("books+shakespeare")
    assert 7_000_000 < len(books) < 8_000_000
    assert data.load_corpus("shakespeare").startswith("First Citizen:")
