"""W3C trace context parsing (https://www.w3.org/TR/trace-context/#traceparent-header)."""

from __future__ import annotations

import re

import pytest

from pcf_api.observability.tracecontext import (
    current_trace_id,
    new_trace_id,
    trace_id_for_request,
    trace_id_from_traceparent,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


class TestValidHeaders:
    def test_the_spec_example_yields_its_trace_id(self) -> None:
        assert trace_id_from_traceparent(VALID) == TRACE_ID

    @pytest.mark.parametrize("flags", ["00", "01", "03", "ff"])
    def test_any_flags_are_accepted(self, flags: str) -> None:
        assert trace_id_from_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-{flags}") == TRACE_ID

    @pytest.mark.parametrize("padding", [" ", "\t", "  \t"])
    def test_surrounding_whitespace_is_ignored(self, padding: str) -> None:
        assert trace_id_from_traceparent(f"{padding}{VALID}{padding}") == TRACE_ID

    @pytest.mark.parametrize("version", ["01", "cc", "fe"])
    def test_future_versions_are_parsed_as_version_00(self, version: str) -> None:
        assert trace_id_from_traceparent(f"{version}-{TRACE_ID}-{PARENT_ID}-01") == TRACE_ID

    def test_future_versions_may_carry_extra_fields(self) -> None:
        header = f"01-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-bring"
        assert trace_id_from_traceparent(header) == TRACE_ID


class TestInvalidHeaders:
    @pytest.mark.parametrize("header", [None, ""])
    def test_absent(self, header: str | None) -> None:
        assert trace_id_from_traceparent(header) is None

    def test_all_zero_trace_id(self) -> None:
        assert trace_id_from_traceparent(f"00-{'0' * 32}-{PARENT_ID}-01") is None

    def test_all_zero_parent_id(self) -> None:
        assert trace_id_from_traceparent(f"00-{TRACE_ID}-{'0' * 16}-01") is None

    def test_version_ff_is_forbidden(self) -> None:
        assert trace_id_from_traceparent(f"ff-{TRACE_ID}-{PARENT_ID}-01") is None

    @pytest.mark.parametrize("extra", ["-", "-extra", "-00"])
    def test_version_00_allows_no_extra_fields(self, extra: str) -> None:
        assert trace_id_from_traceparent(VALID + extra) is None

    @pytest.mark.parametrize(
        "header",
        [
            "garbage",
            "   ",
            f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # hex must be lowercase
            f"00-{TRACE_ID}-{PARENT_ID.upper()}-01",
            f"0A-{TRACE_ID}-{PARENT_ID}-01",
            f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # trace id too short
            f"00-{TRACE_ID}0-{PARENT_ID}-01",  # trace id too long
            f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01",  # parent id too short
            f"00-{TRACE_ID}-{PARENT_ID}0-01",  # parent id too long
            f"00-{TRACE_ID}-{PARENT_ID}-1",  # flags too short
            f"00-{TRACE_ID}-{PARENT_ID}-001",  # flags too long
            f"00-{TRACE_ID}-{PARENT_ID}-0g",  # flags not hex
            f"0-{TRACE_ID}-{PARENT_ID}-01",  # version too short
            f"000-{TRACE_ID}-{PARENT_ID}-01",  # version too long
            f"zz-{TRACE_ID}-{PARENT_ID}-01",  # version not hex
            f"00_{TRACE_ID}_{PARENT_ID}_01",  # wrong separator
            f"00-{TRACE_ID[:31]}g-{PARENT_ID}-01",  # trace id not hex
            f"00-{TRACE_ID}-{PARENT_ID[:15]}x-01",  # parent id not hex
            f"00-{TRACE_ID}-{PARENT_ID}",  # no flags
            f"{TRACE_ID}",  # a bare trace id is not a traceparent
            f"x00-{TRACE_ID}-{PARENT_ID}-01",  # leading junk
            f"01-{TRACE_ID}-{PARENT_ID}-01extra",  # future version: extra must follow a dash
        ],
    )
    def test_malformed(self, header: str) -> None:
        assert trace_id_from_traceparent(header) is None


class TestTraceIdForRequest:
    def test_honours_a_valid_header(self) -> None:
        assert trace_id_for_request(VALID) == TRACE_ID

    @pytest.mark.parametrize(
        "header",
        [None, "", "garbage", f"00-{'0' * 32}-{PARENT_ID}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01"],
    )
    def test_otherwise_makes_a_fresh_one(self, header: str | None) -> None:
        trace_id = trace_id_for_request(header)
        assert HEX32.match(trace_id)
        assert trace_id not in {TRACE_ID, "0" * 32}

    def test_fresh_ids_differ(self) -> None:
        assert len({trace_id_for_request(None) for _ in range(100)}) == 100


class TestNewTraceId:
    def test_is_32_lowercase_hex_and_valid(self) -> None:
        for _ in range(50):
            trace_id = new_trace_id()
            assert HEX32.match(trace_id)
            assert trace_id != "0" * 32
            # A fresh id is usable in an outgoing traceparent.
            assert trace_id_from_traceparent(f"00-{trace_id}-{PARENT_ID}-01") == trace_id

    def test_unique(self) -> None:
        assert len({new_trace_id() for _ in range(1000)}) == 1000


def test_current_trace_id_is_unset_outside_a_request() -> None:
    assert current_trace_id.get() is None
