"""The sort plan of the interface contract's section 6 (docs/interfaces.md follows it), as
written there, with the destinations it names declared and lanes added after its rules
for the cases of the contract's text (postcodes of several countries, negated and unknown
countries)."""

from __future__ import annotations

__all__ = ["CONTRACT_PLAN", "DESTINATIONS", "FUNCTIONS", "plan_with_rules"]

FUNCTIONS = {
    "no_read": 239,
    "invalid_code": 239,
    "multi_read_conflict": 239,
    "no_rule": 238,
    "no_chute": 240,
    "max_recirc": 240,
    "timeout": 240,
    "after_cutoff": 237,
    "customs_hold": 236,
}

# destination -> its chutes (overflow included)
DESTINATIONS = {
    "CASABLANCA": (1, 2, 3, 100),
    "UK-LONDON": (10,),
    "UPS-EXPORT": (11,),
    "EMS-EXPORT": (12,),
    "RETURNS-CN": (13,),
    "MADRID": (20,),
    "CORSICA": (21,),
    "AMSTERDAM": (22,),
    "OTTAWA": (23,),
    "LISBON": (24,),
    "WARSAW": (25,),
    "SAN-FRANCISCO": (26,),
    "DHL-EXPORT": (27,),
    "ABROAD": (28,),
    "PARCELS-NOT-MA-FR": (31,),
    "NOT-FROM-CHINA": (29,),
    "RABAT": (30,),
}

_HEAD = """\
version = 2
name = "casablanca-day"
[machine]
chutes = "1-240"                      # chutes that exist
[functions]                           # one function chute per non-ok reason
no_read = 239
invalid_code = 239
multi_read_conflict = 239
no_rule = 238
no_chute = 240
max_recirc = 240
timeout = 240
after_cutoff = 237
customs_hold = 236
[options]
max_recirculations = 2
balance = "round_robin"               # or "least_loaded"
[[destination]]
name = "CASABLANCA"
chutes = [1, 2, 3]
overflow = [100]
cutoff = "21:30"                      # optional, site local time
"""

_OTHER_DESTINATIONS = "".join(
    f'[[destination]]\nname = "{name}"\nchutes = [{chutes[0]}]\n'
    for name, chutes in DESTINATIONS.items()
    if name != "CASABLANCA"
)

_CONTRACT_RULES = """\
[[rule]]                              # ordered: the first rule that matches wins
destination = "CASABLANCA"
country = ["MA"]                      # destination country (see below); ! negates
postcode = ["20000-20999"]            # range, prefix "20*" or "SW1*", or exact "K1A0B1"
[[rule]]
destination = "UK-LONDON"
country = ["GB"]
postcode = ["E1*", "EC*", "SW1*"]
[[rule]]
destination = "UPS-EXPORT"
barcode = "^1Z[0-9A-Z]{16}$"          # regular expression on the code
[[rule]]
destination = "EMS-EXPORT"
s10_service = ["E*"]                  # UPU S10 service indicator
country = ["!MA"]                     # going abroad
[[rule]]
destination = "RETURNS-CN"
origin = ["MA"]                       # posted in Morocco (S10 suffix or manifest origin)
country = ["CN"]
"""

_MORE_RULES = """\
[[rule]]
destination = "MADRID"
country = ["ES"]
postcode = ["28000-28999"]
[[rule]]
destination = "CORSICA"
country = ["FR"]
postcode = ["20000-20999"]
[[rule]]
destination = "AMSTERDAM"
country = ["NL"]
postcode = ["1012 AB"]
[[rule]]
destination = "OTTAWA"
country = ["CA"]
postcode = ["K1A0B1"]
[[rule]]
destination = "LISBON"
country = ["PT"]
postcode = ["1000001"]
[[rule]]
destination = "WARSAW"
country = ["PL"]
postcode = ["00950"]
[[rule]]
destination = "SAN-FRANCISCO"
country = ["US"]
postcode = ["94105*"]
[[rule]]
destination = "DHL-EXPORT"
barcode = "^[0-9]{10}$"
[[rule]]
destination = "PARCELS-NOT-MA-FR"
s10_service = ["CP"]
country = ["!MA", "!FR"]
[[rule]]
destination = "ABROAD"
country = ["!MA"]
[[rule]]
destination = "NOT-FROM-CHINA"
origin = ["!CN"]
"""

CONTRACT_PLAN = _HEAD + _OTHER_DESTINATIONS + _CONTRACT_RULES + _MORE_RULES


def plan_with_rules(rules: str, *, version: str = "version = 2\n") -> str:
    """The contract's head and destinations with other rules (for check-config cases)."""
    return _HEAD.replace("version = 2\n", version) + _OTHER_DESTINATIONS + rules
