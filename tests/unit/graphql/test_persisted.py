"""The persisted-query stores, the trusted-documents manifest and the document policy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.persisted import (
    DocumentPolicy,
    ManifestError,
    MemoryDocumentStore,
    RedisDocumentStore,
    load_manifest,
    parse_manifest,
    registered_bytes,
    sha256_hex,
)
from pcf_api.sizing import LRU_ENTRY_BYTES

pytestmark = pytest.mark.anyio

DOC = "query Q { notes { totalCount } }"


def digest(algorithm: str, document: str) -> str:
    return hashlib.new(algorithm, document.encode()).hexdigest()


class TestMemoryStore:
    def test_evicts_the_least_recently_used_by_total_bytes(self) -> None:
        entry = registered_bytes("a", "a" * 10) + LRU_ENTRY_BYTES
        store = MemoryDocumentStore(max_bytes=2 * entry + entry // 2)
        store.store("a", "a" * 10)
        store.store("b", "b" * 10)
        assert store.lookup("a") is not None  # a is now the most recently used
        store.store("c", "c" * 10)  # a third would not fit: b goes
        assert store.lookup("b") is None
        assert store.lookup("a") == "a" * 10
        assert store.lookup("c") == "c" * 10
        assert store.size_bytes == 2 * entry

    def test_counts_memory_four_bytes_a_character_for_emoji_and_their_utf8_copy(self) -> None:
        ascii_store, emoji_store = MemoryDocumentStore(10_000), MemoryDocumentStore(10_000)
        ascii_store.store("x", "a" * 100)
        emoji_store.store("x", "\N{GRINNING FACE}" * 100)
        # 4 bytes a character in memory, and 4 more of UTF-8 once it has been encoded.
        assert emoji_store.size_bytes - ascii_store.size_bytes >= 100 * (4 + 4 - 1)

    def test_a_document_larger_than_the_store_is_not_kept(self) -> None:
        store = MemoryDocumentStore(max_bytes=registered_bytes("a", "a" * 5) + LRU_ENTRY_BYTES)
        store.store("a", "a" * 5)
        store.store("big", "b" * 11)
        assert store.lookup("big") is None
        assert store.lookup("a") == "a" * 5

    def test_zero_bytes_keeps_nothing(self) -> None:
        store = MemoryDocumentStore(max_bytes=0)
        store.store("a", "a")
        assert len(store) == 0


class _DownRedis:
    async def get(self, key: str) -> Any:
        raise RedisConnectionError("down")

    async def set(self, key: str, value: str, ex: int) -> Any:
        raise RedisConnectionError("down")


async def test_a_redis_outage_is_a_miss_and_a_dropped_registration() -> None:
    store = RedisDocumentStore(_DownRedis(), local=MemoryDocumentStore(1000))  # type: ignore[arg-type]
    assert await store.get("h") is None
    await store.put("h", DOC)  # does not raise
    assert await store.get("h") == DOC  # this replica keeps it in process
    assert store.errors == 2


class TestManifest:
    @pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
    def test_a_flat_object_with_any_supported_hash(self, algorithm: str) -> None:
        key = digest(algorithm, DOC)
        assert parse_manifest({key: DOC}) == {key: DOC}

    def test_an_algorithm_prefix_and_upper_case_hex(self) -> None:
        key = digest("sha256", DOC)
        assert parse_manifest({f"sha256:{key.upper()}": DOC}) == {key: DOC}

    def test_apollo_persisted_query_manifest(self) -> None:
        key = digest("sha256", DOC)
        raw = {
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [{"id": key, "name": "Q", "type": "query", "body": DOC}],
        }
        assert parse_manifest(raw) == {key: DOC}

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ([DOC], "must be a JSON object"),
            ({digest("sha256", "{ other }"): DOC}, "is not the sha256 of its document"),
            ({"my-query": DOC}, "not a hex MD5, SHA-1 or SHA-256"),
            ({f"md5:{digest('sha256', DOC)}": DOC}, "not a hex MD5, SHA-1 or SHA-256"),
            ({digest("sha256", DOC): 3}, "needs a string id and a non-empty document"),
            ({"format": "apollo-persisted-query-manifest", "operations": {}}, "must be a list"),
        ],
    )
    def test_a_bad_manifest_names_the_problem(self, raw: Any, message: str) -> None:
        with pytest.raises(ManifestError, match=message):
            parse_manifest(raw)

    def test_files(self, tmp_path: Path) -> None:
        good = tmp_path / "persisted-documents.json"
        good.write_text(json.dumps({sha256_hex(DOC): DOC}))
        assert load_manifest(good) == {sha256_hex(DOC): DOC}
        bad = tmp_path / "bad.json"
        bad.write_text("{")
        with pytest.raises(ManifestError, match="not valid JSON"):
            load_manifest(bad)
        with pytest.raises(ManifestError, match="cannot be read"):
            load_manifest(tmp_path / "missing.json")


class TestPolicy:
    async def test_a_plain_query_passes_untouched(self) -> None:
        policy = DocumentPolicy(store=MemoryDocumentStore(100))
        assert await policy.document(DOC, None) == DOC

    async def test_miss_register_hit(self) -> None:
        policy = DocumentPolicy(store=MemoryDocumentStore(1000))
        extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(DOC)}}
        with pytest.raises(AppError) as miss:
            await policy.document("", extensions)
        assert miss.value.code is ErrorCode.PERSISTED_QUERY_NOT_FOUND
        assert await policy.document(DOC, extensions) == DOC
        assert await policy.document("", extensions) == DOC
        assert (policy.misses, policy.registrations, policy.hits) == (1, 1, 1)

    async def test_documents_over_the_size_limit_are_not_registered(self) -> None:
        policy = DocumentPolicy(store=MemoryDocumentStore(10_000), max_document_bytes=10)
        extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(DOC)}}
        assert await policy.document(DOC, extensions) == DOC
        assert policy.registrations == 0

    async def test_only_trusted_refuses_any_other_text(self) -> None:
        policy = DocumentPolicy(store=None, trusted={sha256_hex(DOC): DOC}, only_trusted=True)
        assert await policy.document(DOC, None) == DOC
        with pytest.raises(AppError) as refused:
            await policy.document("{ not graphql", None)
        assert refused.value.code is ErrorCode.DOCUMENT_NOT_TRUSTED
        assert policy.refusals == 1
