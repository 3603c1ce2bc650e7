"""Flags, validation against config.json, and the settings they become."""

from __future__ import annotations

import ipaddress

import pytest

from runner import options
from runner.config import probe_config
from runner.errors import UsageError
from runner.tcprtt import variants
from runner.tcprtt.settings import probe_settings


def parse(*argv: str) -> options.Options:
    parser = options.Parser(prog="tcprtt")
    options.add_probe_flags(parser)
    options.add_runner_flags(parser)
    return options.from_namespace(parser.parse_args(list(argv)))


def test_bcc_flags_short_and_long_mean_the_same():
    short = parse("-i", "2", "-d", "10", "-T", "-m", "-p", "80", "-P", "443",
                  "-a", "10.0.0.1", "-A", "::1", "-B", "-e")
    long = parse("--interval", "2", "--duration", "10", "--timestamp", "--milliseconds",
                 "--lport", "80", "--rport", "443", "--laddr", "10.0.0.1", "--raddr", "::1",
                 "--byraddr", "--extension")
    assert short == long
    assert short.interval == 2 and short.duration == 10 and short.unit == "msecs"


def test_seed_names_for_the_address_keys():
    assert parse("--laddr-hist").byladdr and parse("--raddr-hist").byraddr
    assert parse("-b").label == "Local Address"
    assert parse("-B").label == "Remote Address"
    assert parse().label == "All Addresses"


def test_duration_without_interval_prints_once_at_the_end():
    assert parse("-d", "5").interval == 5
    assert parse().interval == options.FOREVER


@pytest.mark.parametrize("argv,fragment", [
    (["-p", "0"], "-p/--lport: 0 is below the minimum of 1"),
    (["-p", "65536"], "-p/--lport: 65536 is above the maximum of 65535"),
    (["-P", "http"], "-P/--rport: 'http' is not an integer"),
    (["-a", "10.0.0.256"], "-a/--laddr: '10.0.0.256' is not an IPv4 or IPv6 address"),
    (["-A", "fe80::1::2"], "-A/--raddr: 'fe80::1::2' is not an IPv4 or IPv6 address"),
    (["-A", "0.0.0.0"], "-A/--raddr: '0.0.0.0' is the unspecified address"),
    (["-a", "::"], "-a/--laddr: '::' is the unspecified address"),
    (["-i", "0"], "-i/--interval: 0 is below the minimum of 1"),
    (["-i=-3"], "-i/--interval: -3 is below the minimum of 1"),
    (["-i", "-3"], "-i/--interval"),
    (["-d", "soon"], "-d/--duration: 'soon' is not an integer"),
    (["-b", "-B"], "-b/--byladdr and -B/--byraddr cannot be used together"),
    (["-4", "-6"], "-4/--ipv4 and -6/--ipv6 cannot be used together"),
    (["-4", "-A", "::1"], "-4/--ipv4 cannot be used with an IPv6 address filter"),
    (["-6", "-a", "127.0.0.1"], "-6/--ipv6 cannot be used with an IPv4 address filter"),
    (["--attach", "uprobe"], "--attach: 'uprobe' is not one of"),
    (["--backend", "bcc"], "--backend: 'bcc' is not one of"),
    (["--max-keys", "0"], "--max-keys: 0 is outside"),
    (["--max-keys", "16777216"], "--max-keys: 16777216 is outside 1..1048576 "
                                 "(about 220 bytes of kernel memory a key)"),
    (["--max-keys", "lots"], "--max-keys: 'lots' is not an integer"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_values_are_named_in_one_line(argv, fragment):
    with pytest.raises(UsageError) as info:
        parse(*argv)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_settings_from_options():
    values = probe_settings(parse("-p", "8080", "-A", "192.168.1.100", "-a", "fe80::1",
                                  "-B", "-m"))
    assert values == {
        "targ_sport": 8080,
        "targ_daddr": int(ipaddress.IPv4Address("192.168.1.100")),
        "targ_saddr_v6_hi": 0xFE80_0000_0000_0000,  # fe80::1, first 8 bytes
        "targ_saddr_v6_lo": 1,                      # and last 8
        "targ_raddr_hist": True,
        "targ_ms": True,
    }
    assert probe_settings(parse("-6"))["targ_ipver"] == 6
    assert probe_settings(parse("-4"))["targ_ipver"] == 4


def test_v4_mapped_address_becomes_the_ipv4_filter():
    values = probe_settings(parse("-A", "::ffff:10.1.2.3"))
    assert values == {"targ_daddr": int(ipaddress.IPv4Address("10.1.2.3"))}


def test_no_flags_no_settings():
    assert probe_settings(parse()) == {}
    assert probe_settings(parse(), "prometheus") == {"targ_show_ext": True}
    assert probe_settings(parse("-m", "--prometheus", "9090")) == {"targ_show_ext": True}
    assert probe_settings(parse("-m", "--json")) == {"targ_ms": True}


def test_every_option_that_sets_a_variable_names_a_real_one():
    config = probe_config()
    for opt in config["options"]:
        sets = opt.get("sets", [])
        for name in [sets] if isinstance(sets, str) else sets:
            assert name in config["variables"], (opt["dest"], name)


def test_help_says_what_a_key_costs():
    from runner import options
    parser = options.Parser(prog="tcprtt")
    options.add_runner_flags(parser)
    text = " ".join(parser.format_help().split())
    assert f"at most {options.MAX_KEYS}" in text
    assert "220 bytes of locked kernel memory" in text


def test_attach_takes_auto_and_every_variant_of_the_table():
    for name in variants.attach_choices():
        assert parse("--attach", name).attach == name
    assert variants.attach_choices() == ("auto", *probe_config()["variants"])


def test_every_option_that_sets_a_setting_has_its_value_kind():
    """What settings.py reads in "sets": a list is an address (the IPv4
    setting, then the IPv6 halves) or, of kind "prefix", the IPv4 and IPv6
    bits cleared; a switch's "value" fits its setting."""
    config = probe_config()
    for opt in config["options"]:
        sets = opt.get("sets")
        if isinstance(sets, list) and opt.get("kind") == "prefix":
            assert len(sets) == 2 and all(config["variables"][n]["type"] == "int"
                                          for n in sets), opt["dest"]
        elif isinstance(sets, list):
            assert len(sets) == 3 and "anyOf" in opt["schema"], opt["dest"]
        elif "value" in opt:
            assert opt.get("action") == "store_true", opt["dest"]
            assert config["variables"][sets]["type"] == "int", opt["dest"]
    for output, needs in config["outputs"].items():
        assert set(needs) - {"why"} <= set(config["variables"]), output
