"""The Casablanca plan's intent, as a person reads config/casablanca/sortplan.toml.

Hand-written tables of places and the lane each belongs to: the generator picks a place
(a Madrid street, a Corsican village, a London office) and knows the lane because it chose
the place, not because it evaluated the plan's rules. Keep these tables in human terms;
never derive them from the plan file.
"""

from __future__ import annotations

from typing import Final

SITE_COUNTRY: Final = "MA"

# ISO 3166-1 numeric codes of the countries used here (GS1 AI 421 carries these).
ISO_NUMERIC: Final = {
    "MA": "504", "FR": "250", "MC": "492", "ES": "724", "AD": "020", "PT": "620",
    "DE": "276", "AT": "040", "NL": "528", "BE": "056", "LU": "442", "IT": "380",
    "SM": "674", "VA": "336", "GB": "826", "IE": "372", "US": "840", "CA": "124",
    "JP": "392", "PL": "616", "CH": "756", "TR": "792", "BR": "076", "SE": "752",
    "CN": "156",
}  # fmt: skip

# Delivery cities of the hub, Barid Al-Maghrib 5-digit postcodes (inclusive ranges).
MOROCCAN_CITIES: Final[dict[str, tuple[tuple[int, int], ...]]] = {
    "CASABLANCA-CENTRE": ((20000, 20299), (20500, 20699)),
    "CASABLANCA-EAST": ((20300, 20499), (20700, 20999), (27000, 27999)),
    "MOHAMMEDIA": ((28000, 28999),),
    "EL-JADIDA": ((24000, 24999),),
    "RABAT-SALE": ((10000, 12999),),
    "KENITRA": ((14000, 14999),),
    "FES-MEKNES": ((30000, 30999), (50000, 50999)),
    "MARRAKECH": ((40000, 40999),),
    "AGADIR": ((80000, 81999),),
    "TANGER-TETOUAN": ((90000, 90999), (93000, 93999)),
    "ORIENTAL": ((60000, 60999), (62000, 62999)),
    "SOUTH": ((70000, 70999), (73000, 73999), (82000, 82999)),
}
# Moroccan towns the plan has no city lane for (Khouribga, Settat, Taza, Ouarzazate).
UNMAPPED_MOROCCO: Final = ((25000, 25999), (26000, 26999), (35000, 35999), (45000, 45999))

# (country, postcode as people write it, lane). Chosen to make the country decide: 20250
# is Casablanca in MA but Corsica in FR, 20001 is San Sebastian, 20121 Milan, 20095
# Hamburg, 28013 Madrid (Mohammedia is MA 28xxx), 93200 Saint-Denis (Tangier is MA 93xxx).
EXPORT_PLACES: Final[dict[str, tuple[tuple[str, str, str], ...]]] = {
    "FR": (
        ("FR", "75008", "FR-PARIS"), ("FR", "75011", "FR-PARIS"), ("FR", "92100", "FR-PARIS"),
        ("FR", "93200", "FR-PARIS"), ("FR", "77420", "FR-PARIS"), ("FR", "95000", "FR-PARIS"),
        ("FR", "20000", "FR-CORSE"), ("FR", "20250", "FR-CORSE"), ("FR", "20200", "FR-CORSE"),
        ("FR", "20090", "FR-CORSE"), ("FR", "69001", "FR-OTHER"), ("FR", "13001", "FR-OTHER"),
        ("FR", "33000", "FR-OTHER"), ("FR", "59000", "FR-OTHER"), ("MC", "98000", "FR-OTHER"),
    ),
    "ES": (
        ("ES", "28013", "ES-MADRID"), ("ES", "28001", "ES-MADRID"),
        ("ES", "28045", "ES-MADRID"), ("ES", "08001", "ES-BARCELONA"),
        ("ES", "08036", "ES-BARCELONA"), ("ES", "41001", "ES-OTHER"),
        ("ES", "46001", "ES-OTHER"), ("ES", "20001", "ES-OTHER"), ("AD", "AD500", "ES-OTHER"),
    ),
    "PT": (("PT", "1000-001", "PT"), ("PT", "4000-322", "PT"), ("PT", "8000-079", "PT")),
    "DE": (
        ("DE", "10115", "DE"), ("DE", "80331", "DE"), ("DE", "20095", "DE"),
        ("AT", "1010", "DE"),
    ),
    "NL": (("NL", "1012 AB", "NL"), ("NL", "3011 AA", "NL"), ("NL", "2511 CV", "NL")),
    "BE": (("BE", "1000", "BE"), ("BE", "2000", "BE"), ("LU", "1009", "BE")),
    "IT": (
        ("IT", "00118", "IT"), ("IT", "20121", "IT"), ("IT", "80100", "IT"),
        ("SM", "47890", "IT"), ("VA", "00120", "IT"),
    ),
    # London's postal areas; the others avoid the letters the London prefixes start with
    # (E, N, W, SE, SW): see LONDON_PREFIX_TRAPS.
    "GB": (
        ("GB", "SW1A 1AA", "GB-LONDON"), ("GB", "EC1A 1BB", "GB-LONDON"),
        ("GB", "E1 6AN", "GB-LONDON"), ("GB", "N1 9GU", "GB-LONDON"),
        ("GB", "NW1 2DB", "GB-LONDON"), ("GB", "SE1 7PB", "GB-LONDON"),
        ("GB", "W1A 1AA", "GB-LONDON"), ("GB", "WC2N 5DU", "GB-LONDON"),
        ("GB", "M1 1AE", "GB-OTHER"), ("GB", "B1 1BB", "GB-OTHER"), ("GB", "G1 1XQ", "GB-OTHER"),
        ("GB", "L1 8JQ", "GB-OTHER"), ("GB", "BS1 4DJ", "GB-OTHER"),
        ("GB", "CF10 1EP", "GB-OTHER"), ("GB", "LS1 1UR", "GB-OTHER"),
        ("GB", "AB10 1XG", "GB-OTHER"), ("IE", "D02 X285", "GB-OTHER"),
    ),
    "WORLD": (
        ("US", "94105", "EXPORT-WORLD"), ("US", "10001", "EXPORT-WORLD"),
        ("CA", "K1A 0B1", "EXPORT-WORLD"), ("JP", "100-0001", "EXPORT-WORLD"),
        ("PL", "00-950", "EXPORT-WORLD"), ("CH", "8001", "EXPORT-WORLD"),
        ("TR", "34000", "EXPORT-WORLD"), ("BR", "01310-100", "EXPORT-WORLD"),
        ("SE", "111 22", "EXPORT-WORLD"),
    ),
}  # fmt: skip

# Postcodes in the plan's GB-LONDON prefixes that are not London (Edinburgh, Exeter,
# Newcastle, Nottingham, Warrington...): the plan as written sends them to GB-LONDON. Not
# generated; reported to the plan's owner.
LONDON_PREFIX_TRAPS: Final = ("EH1 1YZ", "EX1 1AA", "NE1 4ST", "NG1 5DT", "WA1 1AA")

# Chinese addresses for returns (Beijing, Shanghai, Shenzhen, Guangzhou, Yiwu).
CHINA_POSTCODES: Final = ("100000", "200000", "518000", "510000", "322000")

# S10 service indicators by the plan's postal lanes; V is a service no lane takes.
S10_SERVICES: Final = {
    "EMS": ("EE", "EA", "EM"),
    "REGISTERED": ("RB", "RR", "RA"),
    "PACKETS": ("LX", "LY", "UA", "UB", "CP", "CA"),
    "NONE": ("VV", "VA"),
}

# Where the hub's mail is posted, and how often (the S10 suffix).
ORIGINS: Final = ("CN", "HK", "TR", "US", "FR", "ES", "AE", "GB", "DE", "MA")
ORIGIN_WEIGHTS: Final = (55, 8, 5, 5, 5, 5, 4, 3, 3, 7)

# S10 suffixes that are not officially assigned ISO 3166-1 codes: user-assigned (XX, ZZ,
# AA, QZ) and withdrawn (YU Yugoslavia, AN Netherlands Antilles).
BAD_S10_SUFFIXES: Final = ("XX", "ZZ", "AA", "QZ", "YU", "AN")

# Destinations a shipper may name in pre-advice, all of them address lanes.
PREADVICE_DESTINATIONS: Final = (
    *MOROCCAN_CITIES,
    "FR-PARIS", "FR-OTHER", "ES-MADRID", "ES-OTHER", "PT", "DE", "NL", "BE", "IT",
    "GB-LONDON", "GB-OTHER", "EXPORT-WORLD",
)  # fmt: skip


def postal_lane(service: str, origin: str) -> str:
    """The plan's lanes for postal items without a ship-to address: by the first letter of
    the S10 service, and whether it was posted in Morocco. "" when no lane takes it."""
    kind = {"E": "EMS", "R": "REGISTERED", "L": "PACKETS", "U": "PACKETS", "C": "PACKETS"}
    lane = kind.get(service[0])
    if lane is None:
        return ""
    return f"EXPORT-{lane}" if origin == SITE_COUNTRY else f"INBOUND-{lane}-NO-ADDRESS"


def label_postcode(written: str) -> str:
    """A postcode as it fits a GS1 AI 420/421 value: spaces are not in the GS1 character
    set (hyphens are), so `SW1A 1AA` is printed `SW1A1AA` and `1000-001` stays."""
    return written.replace(" ", "")
