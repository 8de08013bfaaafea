"""The fictional news generator's word lists: event types, sentence templates, name syllables.

Data tables only (no logic): :mod:`.news_world` builds events and their wordings from them and
:mod:`.news_questions` asks about them.
"""
from __future__ import annotations

from typing import Any

# Each event type: objects (full phrase, short noun), the organisation's verb, the person's role, a
# number with its unit, and outcomes (>= 5, so 3 same-kind distractors exist). Sentences come in
# several realisations so that rewordings say the same facts differently.
EVENT_TYPES: list[dict[str, Any]] = [
    {"key": "opening", "verb": "opened", "role": "project director",
         "objects": [("a desalination plant", "desalination plant"), ("a tidal power station", "tidal power station"),
                  ("a light-rail line", "light-rail line"), ("a vertical farm", "vertical farm")],
         "number": {"unit": "households", "lo": 1200, "hi": 48000, "step": 100, "fmt": "int",
                     "sents": ["The {short} is expected to serve {n} households.",
                            "Officials said {n} households will rely on the {short}.",
                            "Some {n} households are due to be connected to the {short}."],
                     "q": "How many households is {D} expected to serve?"},
         "outcome": {"values": ["ahead of schedule", "on schedule", "four months late", "a year late",
                              "after a funding freeze"],
                      "sents": ["Construction was completed {o}.", "The builders finished the work {o}.",
                             "Work on the {short} wrapped up {o}."],
                      "q": "How was construction of {D} completed?"}},
    {"key": "launch", "verb": "launched", "role": "product lead",
         "objects": [("a solar ferry", "solar ferry"), ("a delivery drone", "delivery drone"),
                  ("a water-purifying tablet", "water-purifying tablet"), ("a soil sensor", "soil sensor")],
         "number": {"unit": "pre-orders", "lo": 800, "hi": 95000, "step": 50, "fmt": "int",
                     "sents": ["The company said it had received {n} pre-orders.",
                            "Pre-orders reached {n} before launch day.",
                            "By launch day, buyers had placed {n} pre-orders."],
                     "q": "How many pre-orders did {D} receive?"},
         "outcome": {"values": ["sold out within a day", "was recalled after a week", "received mixed reviews",
                              "won a design award", "was delayed by a software fault"],
                      "sents": ["After the launch, the {short} {o}.", "In its first week on sale the {short} {o}.",
                             "Reports say the {short} {o}."],
                      "q": "What happened to {D} after release?"}},
    {"key": "discovery", "verb": "reported", "role": "lead scientist",
         "objects": [("a deep-sea vent", "deep-sea vent"), ("a drought-resistant wheat strain", "wheat strain"),
                  ("a new lichen species", "lichen species"), ("a meteorite fragment", "meteorite fragment")],
         "number": {"unit": "samples", "lo": 40, "hi": 9000, "step": 1, "fmt": "int",
                     "sents": ["The team analysed {n} samples.",
                            "The finding rests on {n} samples collected over two years.",
                            "Researchers examined {n} samples before announcing the result."],
                     "q": "How many samples were analysed for {D}?"},
         "outcome": {"values": ["was confirmed by an independent lab", "was disputed by rival researchers",
                              "was published in a peer-reviewed journal", "was withdrawn for re-analysis",
                              "was shortlisted for a national prize"],
                      "sents": ["The finding {o}.", "Since then the result {o}.", "The report on the {short} {o}."],
                      "q": "What happened to the finding on {D}?"}},
    {"key": "strike", "verb": "organised", "role": "union spokesperson",
         "objects": [("a strike at the port", "port strike"), ("a strike on the bus network", "bus strike"),
                  ("a strike at the public hospitals", "hospital strike"),
                  ("a strike at the recycling depots", "recycling strike")],
         "number": {"unit": "workers", "lo": 150, "hi": 12000, "step": 1, "fmt": "int",
                     "sents": ["Some {n} workers walked out.", "The walkout involved {n} workers.",
                            "Organisers said {n} workers took part."],
                     "q": "How many workers took part in {D}?"},
         "outcome": {"values": ["ended with a pay deal", "was called off after two days", "went to arbitration",
                              "lasted nine days", "ended without an agreement"],
                      "sents": ["The strike {o}.", "In the end the {short} {o}.", "The dispute {o}."],
                      "q": "How did {D} end?"}},
    {"key": "festival", "verb": "hosted", "role": "festival director",
         "objects": [("a jazz festival", "jazz festival"), ("a robotics fair", "robotics fair"),
                  ("a harbour marathon", "harbour marathon"), ("a film week", "film week")],
         "number": {"unit": "visitors", "lo": 2000, "hi": 250000, "step": 100, "fmt": "int",
                     "sents": ["Organisers counted {n} visitors.", "The event drew {n} visitors.",
                            "Over the weekend, {n} visitors attended."],
                     "q": "How many visitors attended {D}?"},
         "outcome": {"values": ["set an attendance record", "was cut short by storms", "ran at a loss",
                              "moved to a larger venue", "was extended by a day"],
                      "sents": ["This year the {short} {o}.", "The {short} {o}, organisers confirmed.",
                             "According to organisers, the event {o}."],
                      "q": "What happened at {D}?"}},
    {"key": "lawsuit", "verb": "filed", "role": "lead counsel",
         "objects": [("a lawsuit over water rights", "water-rights lawsuit"),
                  ("a lawsuit over a patent", "patent lawsuit"),
                  ("a lawsuit over a land lease", "land-lease lawsuit"),
                  ("a lawsuit over a data breach", "data-breach lawsuit")],
         "number": {"unit": "million dollars", "lo": 12, "hi": 980, "step": 1, "fmt": "millions",
                     "sents": ["The claim sought {n} in damages.", "Damages of {n} were at stake.",
                            "The suit asked the court for {n}."],
                     "q": "How much in damages did {D} seek?"},
         "outcome": {"values": ["was upheld in full", "was dismissed", "was settled out of court",
                              "was sent to a higher court", "ended in a retrial"],
                      "sents": ["The lawsuit {o}.", "In the end the case {o}.", "Court records show the {short} {o}."],
                      "q": "What was the result of {D}?"}},
    {"key": "agreement", "verb": "signed", "role": "chief negotiator",
         "objects": [("a water-sharing treaty", "water-sharing treaty"),
                     ("a ten-year supply contract", "supply contract"),
                  ("a research partnership", "research partnership"), ("a land-use accord", "land-use accord")],
         "number": {"unit": "jobs", "lo": 50, "hi": 20000, "step": 10, "fmt": "int",
                     "sents": ["The deal is expected to create {n} jobs.", "Planners say {n} jobs will follow.",
                            "It should bring {n} jobs to the area."],
                     "q": "How many jobs is {D} expected to create?"},
         "outcome": {"values": ["was ratified by the city council", "was rejected by the city council",
                              "was put on hold", "was extended to neighbouring towns",
                              "was renegotiated within months"],
                      "sents": ["The agreement {o}.", "Weeks later the deal {o}.", "The {short} {o}, officials said."],
                      "q": "What happened to {D}?"}},
    {"key": "emergency", "verb": "tackled", "role": "incident commander",
         "objects": [("a flash flood", "flash flood"), ("a wildfire", "wildfire"), ("a landslide", "landslide"),
                  ("a chemical spill", "chemical spill")],
         "number": {"unit": "residents", "lo": 100, "hi": 30000, "step": 1, "fmt": "int",
                     "sents": ["Crews evacuated {n} residents.", "The evacuation covered {n} residents.",
                            "In total {n} residents had to leave their homes."],
                     "q": "How many residents were evacuated during {D}?"},
         "outcome": {"values": ["was contained within a day", "spread to nearby towns", "forced a week-long curfew",
                              "was declared a regional emergency", "caused no injuries"],
                      "sents": ["The {short} {o}.", "Officials said the {short} {o}.", "In the end the incident {o}."],
                      "q": "What happened with {D}?"}},
]

#: tiny: tests (~1 s); default: the embedded CPU study (notebook 03 fine-tunes on it);

LEDES = ["{Org} {verb} {obj} in {place}, {desc}, on {date}.",
          "On {date}, {org} {verb} {obj} in {place}, {desc}.",
          "In {place}, {desc}, {org} {verb} {obj} on {date}.",
          "{Obj} was {verb} by {org} in {place}, {desc}, on {date}."]
PERSON = ["{person} served as {role}.", "The {role} was {person}.",
           "{person}, who acted as {role}, spoke to reporters afterwards.",
           "Speaking as {role}, {person} called the day a milestone."]
QUOTE = ["{person2} of {org2} called it {adj}.", "\"It is {adj},\" said {person2} of {org2}.",
          "Commenting for {org2}, {person2} described it as {adj}."]
FOLLOW = ["{org} said more details would follow in {later}.", "A review is planned for {later}.",
           "The next update is expected in {later}."]
NEIGHBOUR = ["Residents of neighbouring {place2} followed the news closely.",
              "The news was also watched in nearby {place2}.",
              "Officials in {place2}, a short drive away, welcomed the news."]
ADJS = ["long overdue", "a bold gamble", "a welcome surprise", "premature", "a model for the region",
         "a costly detour"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
#: the attributes a question can ask about: the story's own slots, then the commentary around it
#: (who commented, for which organisation, their verdict, the neighbouring town, the next update)
ATTRS = ("who", "org", "where", "when", "number", "outcome",
          "commentator", "commentator_org", "verdict", "neighbour", "next_update")
YEAR = 2031

# Invented-name syllables (ASCII, pronounceable, chosen to avoid common English words).
ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t",
           "tr", "v", "z", "th", "sh", "kal", "mer", "val"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ia", "ou", "y"]
CODAS = ["n", "r", "l", "s", "th", "m", "x", "nd", "rn", "lt", "sk", "v", "ck"]
FIRST_ENDINGS = ["a", "o", "en", "is", "el", "an", "ia", "ir", "ette", "ard"]
ORG_KINDS = ["Group", "Works", "Consortium", "Institute", "Alliance", "Foundation", "Holdings",
              "Collective", "Labs", "Authority", "Trust", "Partners"]
PLACE_FORMS = ["{s}", "Port {s}", "{s} Bay", "New {s}", "{s} Falls", "{s}ford", "{s} Heights"]
PLACE_KINDS = ["harbour town", "river city", "mountain town", "lake city", "industrial city", "market town"]
