"""The hardened parser refuses what it must and keeps what it must."""

from pathlib import Path

import pytest

from gateway.errors import ParseError, PayloadTooLargeError
from gateway.jsonxml import JsonBinding
from gateway.xml import ParserLimits, parse_json, parse_xml, soap_payload

SOAP = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">%s</s:Envelope>'


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', "xml.forbidden-construct"),
        (b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>', "xml.forbidden-construct"),
        (b"<a><?php echo 1 ?></a>", "xml.forbidden-construct"),
        (b"<a><b></a>", "xml.malformed"),
        (b"<a>\xff\xfe</a>", "xml.encoding"),
        (b"<a>" * 60 + b"</a>" * 60, "xml.too-deep"),
        (b"<a>" * 10_000 + b"</a>" * 10_000, "xml.too-deep"),  # past libxml2's own bound
    ],
)
def test_hostile_xml_is_refused_with_its_code(body: bytes, code: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_xml(body)
    assert caught.value.code == code


def test_malformed_xml_names_the_line() -> None:
    with pytest.raises(ParseError) as caught:
        parse_xml(b"<a>\n<b>\n</a>")
    assert caught.value.line == 3


def test_xml_declaration_and_comments_are_accepted() -> None:
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><!-- note --><a><b>x</b></a>')
    assert root.findtext("b") == "x"


def test_size_limit_applies_before_parsing() -> None:
    with pytest.raises(PayloadTooLargeError):
        parse_xml(b"<a>" + b"x" * 100 + b"</a>", ParserLimits(max_bytes=50))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"a": 1, "a": 2}', "json.duplicate-key"),
        (b'{"a": NaN}', "json.malformed"),
        (b'{"a": Infinity}', "json.malformed"),
        (b"[" * 200000 + b"]" * 200000, "json.too-deep"),
        (b'{"a": "\xff"}', "json.malformed"),
        (b'{"a": 1', "json.malformed"),
        (b'{"a": ' + b"9" * 5000 + b"}", "json.number-too-large"),
    ],
)
def test_hostile_json_is_refused_with_its_code(body: bytes, code: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_json(body)
    assert caught.value.code == code


def test_json_nested_duplicate_is_found() -> None:
    with pytest.raises(ParseError, match="'x'"):
        parse_json(b'{"a": {"x": 1, "y": 2, "x": 3}}')


def test_soap_envelope_with_two_bodies_is_refused() -> None:
    body = SOAP % b"<s:Body><a/></s:Body><s:Body><b/></s:Body>"
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(body))
    assert caught.value.code == "soap.malformed"


def test_soap_payload_is_the_single_body_child() -> None:
    payload, header = soap_payload(
        parse_xml(SOAP % b"<s:Header/><s:Body><p:x xmlns:p='u'/></s:Body>")
    )
    assert payload.tag == "{u}x"
    assert header is not None


def test_not_a_soap_envelope() -> None:
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(b"<Envelope/>"))
    assert caught.value.code == "soap.malformed"


def test_every_error_code_is_documented() -> None:
    from pathlib import Path

    from gateway.errors import PROBLEMS

    documented = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    for code, problem in PROBLEMS.items():
        assert f"| `{code}` | {problem.status} |" in documented, code


def test_utf16_cannot_smuggle_a_dtd_past_the_byte_checks() -> None:
    body = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;<?pi?></a>'
    with pytest.raises(ParseError) as caught:
        parse_xml(body.encode("utf-16"))
    assert caught.value.code in ("xml.encoding", "xml.forbidden-construct")
    with pytest.raises(ParseError) as caught:
        parse_xml('<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16"))
    assert caught.value.code == "xml.encoding"


@pytest.mark.parametrize(
    "body",
    [
        # An external parameter entity on /dev/zero would hang a parser that read the DTD.
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY % p SYSTEM '
        '"file:///dev/zero"> %p;]><x/>'.encode("utf-16"),
        '<!DOCTYPE x [<!ENTITY c "47">]><x a="&c;"/>'.encode("utf-16"),
        '<!DOCTYPE x [<!ENTITY c "47">]><x a="&c;"/>'.encode("utf-16-le"),
        "<!DOCTYPE x><x/>".encode("utf-32"),
        b'<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE x+AD4-<x/>',
    ],
    ids=["utf16-declared", "utf16-bom", "utf16le-bare", "utf32", "utf7"],
)
def test_no_encoding_carries_a_dtd_past_the_checks(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_xml(body)
    assert caught.value.code in ("xml.encoding", "xml.malformed", "xml.forbidden-construct")


def test_json_numbers_keep_every_digit_and_strings_every_character() -> None:
    from decimal import Decimal

    value = parse_json(b'{"a": 5400.0000000000000001, "b": "x\\r\\ny"}')
    assert value["a"] == Decimal("5400.0000000000000001")
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a byte order mark is tolerated


def test_lone_surrogates_are_refused() -> None:
    for body in (b'{"a": "x\\ud800"}', b'{"\\udfff": 1}'):
        with pytest.raises(ParseError) as caught:
            parse_json(body)
        assert caught.value.code == "json.malformed"
    assert parse_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a valid pair


def test_soap_header_that_must_be_understood_is_refused() -> None:
    body = SOAP % (
        b"<s:Header><x:Sec xmlns:x='u' s:mustUnderstand='1'/></s:Header><s:Body><p/></s:Body>"
    )
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(body))
    assert caught.value.code == "soap.must-understand"
    optional = SOAP % b"<s:Header><x:Note xmlns:x='u'/></s:Header><s:Body><p/></s:Body>"
    assert soap_payload(parse_xml(optional))[0].tag == "p"


def test_soap_body_with_text_beside_its_element_is_refused() -> None:
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(SOAP % b"<s:Body>JUNK<p/></s:Body>"))
    assert caught.value.code == "soap.malformed"


# -- the limits on elements, attributes, text and numbers; XInclude; UTF-8 ----------------------

_ATTRIBUTES = b" ".join(b'a%d="1"' % i for i in range(65))
_DECLARATIONS = b" ".join(b'xmlns:p%d="urn:%d"' % (i, i) for i in range(65))


@pytest.mark.parametrize(
    ("body", "code", "line"),
    [
        (
            b'<a xmlns:xi="http://www.w3.org/2001/XInclude">\n<xi:include href="x"/></a>',
            "xml.forbidden-construct",
            1,
        ),
        (b'<a>\n<i xmlns="http://www.w3.org/2003/XInclude"/></a>', "xml.forbidden-construct", 2),
        # The namespace name written with a character reference: found all the same.
        (
            b'<a xmlns:x="http://www.w3.org/2001/&#88;Include"><x:include href="x"/></a>',
            "xml.forbidden-construct",
            1,
        ),
        (b"<a>\n<b " + _ATTRIBUTES + b"/></a>", "xml.too-many-attributes", 2),
        (b"<a " + _DECLARATIONS + b"/>", "xml.too-many-attributes", 1),
        (b"<a>" + b"<b/>" * 20_001 + b"</a>", "xml.too-many-elements", None),
        (b"<a>\n<b>" + b"x" * (256 * 1024 + 1) + b"</b></a>", "xml.text-too-large", 2),
        (b'<a b="' + b"x" * (256 * 1024 + 1) + b'"/>', "xml.text-too-large", 1),
        # Neither of the two pieces is over the limit; the text node they make is.
        (
            b"<a>" + b"x" * 200_000 + b"<![CDATA[" + b"<" * 100_000 + b"]]></a>",
            "xml.text-too-large",
            1,
        ),
        ("<a>" + "é" * 140_000 + "</a>", "xml.text-too-large", 1),  # 280 000 bytes in UTF-8
        (b"<a>\n\n<b>\xc0\xaf</b></a>", "xml.encoding", 3),  # an overlong "/"
        (b"<a>\x80</a>", "xml.encoding", 1),  # a lone continuation byte
        (b"<a>\xed\xa0\x80</a>", "xml.encoding", 1),  # a surrogate, UTF-8 encoded
        (b"<a>\xf4\x90\x80\x80</a>", "xml.encoding", 1),  # beyond U+10FFFF
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe9</a>', "xml.encoding", 1),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><a/>', "xml.encoding", 1),
        (b"<a>\n<?php ?></a>", "xml.forbidden-construct", 2),
    ],
    ids=[
        "xinclude",
        "xinclude-2003-default",
        "xinclude-char-ref",
        "attributes",
        "namespace-declarations",
        "elements",
        "text",
        "attribute-value",
        "text-and-cdata",
        "text-multibyte",
        "overlong",
        "lone-continuation",
        "surrogate",
        "beyond-unicode",
        "latin1-declared",
        "latin1-declared-ascii-body",
        "pi-line",
    ],
)
def test_limits_and_constructs_are_refused_with_code_and_line(
    body: bytes | str, code: str, line: int | None
) -> None:
    data = body.encode() if isinstance(body, str) else body
    with pytest.raises(ParseError) as caught:
        parse_xml(data)
    assert (caught.value.code, caught.value.line) == (code, line)


@pytest.mark.parametrize(
    "body",
    [
        b"<a " + b" ".join(b'a%d="1"' % i for i in range(64)) + b"/>",
        b"<a>" + b"<b/>" * 19_999 + b"</a>",  # and the root: 20 000
        b"<a>" + b"x" * (256 * 1024) + b"</a>",
        b"<a>" + b"=" * 1000 + b"</a>",  # many "=" in text are no attributes
        b"<a>http://www.w3.org/2001/XInclude</a>",  # its name in text declares nothing
        b"<a>" + (b"<b>" + b"x" * 200_000 + b"</b>") * 2 + b"</a>",
        '<?xml version="1.0" encoding="us-ascii"?><a>\u00e9t\u00e9 \U0001f600</a>'.encode(),
    ],
    ids=[
        "64-attributes",
        "20000-elements",
        "text-at-limit",
        "equals",
        "xinclude-text",
        "two-texts",
        "utf8",
    ],
)
def test_what_is_within_the_limits_is_accepted(body: bytes) -> None:
    parse_xml(body)


def test_limits_are_set_by_the_settings() -> None:
    from gateway.config import Settings

    limits = ParserLimits.of(
        Settings(max_elements=10, max_attributes=2, max_text_bytes=8, max_number_digits=5)
    )
    for body, code in [
        (b"<a>" + b"<b/>" * 11 + b"</a>", "xml.too-many-elements"),
        (b'<a x="1" y="2" z="3"/>', "xml.too-many-attributes"),
        (b"<a>123456789</a>", "xml.text-too-large"),
    ]:
        with pytest.raises(ParseError) as caught:
            parse_xml(body, limits)
        assert caught.value.code == code
    with pytest.raises(ParseError) as caught:
        parse_json(b'{"a": 123456}', limits)
    assert caught.value.code == "json.number-too-large"
    assert parse_json(b'{"a": 12345}', limits) == {"a": 12345}


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": ' + b"9" * 101 + b"}",
        b'{"a": 1e999999}',
        b'{"a": -1E+999999}',
        b'{"a": 1e-999999}',  # its positional form: a million zeros
        b'{"a": 1e9999999999999999999}',  # beyond Decimal (an ArithmeticError, no ValueError)
        b'{"a": 0.' + b"1" * 200 + b"}",
    ],
)
def test_huge_json_numbers_are_refused(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_json(body)
    assert caught.value.code == "json.number-too-large"


def test_json_numbers_within_the_bound_are_kept() -> None:
    from decimal import Decimal

    value = parse_json(b'{"a": ' + b"9" * 100 + b', "b": 1e100, "c": -12.5e-3}')
    assert value == {"a": int("9" * 100), "b": Decimal("1e100"), "c": Decimal("-0.0125")}


@pytest.fixture(scope="module")
def platform_binding() -> JsonBinding:
    from gateway.mapping import MappingSet

    binding = MappingSet.load(Path(__file__).resolve().parents[2]).party("be-platform").binding
    assert binding is not None
    return binding


@pytest.mark.parametrize("depth", [500, 990, 1000, 10_000, 100_000])
@pytest.mark.parametrize("shape", ["array", "object"])
def test_deep_json_never_escapes_as_recursion_error(
    platform_binding: JsonBinding, depth: int, shape: str
) -> None:
    """However deep, a body is parsed or refused as json.too-deep, and the binding (which
    walks what parses) refuses what is deeper than the hub's limit; no RecursionError escapes."""
    opening, closing = (b"[", b"]") if shape == "array" else (b'{"a":', b"}")
    body = b'{"header":' + opening * depth + b"1" + closing * depth + b"}"
    with pytest.raises(ParseError) as caught:
        platform_binding.to_xml(parse_json(body))
    assert caught.value.code in ("json.too-deep", "json.wrong-kind", "json.unknown-member")
    if depth >= 1000:
        assert caught.value.code == "json.too-deep"


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml-stylesheet href="x.xsl"?><a/>',
        b"<?xmlfoo bar?><a/>",
        b'\xef\xbb\xbf <?xml-stylesheet href="x"?>\n<a/>',
        b'<?xml version="1.0"?><?xml-stylesheet href="x"?><a/>',
    ],
)
def test_a_processing_instruction_named_like_the_declaration_is_one(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_xml(body)
    assert caught.value.code == "xml.forbidden-construct"
