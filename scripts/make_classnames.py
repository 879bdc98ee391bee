"""Regenerate langclip's shipped class names: src/langclip/resources/classnames/<dataset>.json.

    python scripts/make_classnames.py           # write the files
    python scripts/make_classnames.py --check   # exit 1 if the files differ from what this makes

Each file is {"en": [name, ...], "ru": [{"nom": ..., "gen": ...}, ...]}, in the dataset's label order
(torchvision's: CIFAR's meta files, Caltech101's sorted folders without BACKGROUND_Google).
English names are CLIP's / CLIP_benchmark's. Russian names are written here in the nominative; the
genitive (for templates such as "фото {gen}") is made with pymorphy3, so evaluation needs no
morphology at run time. In a phrase every word agrees (adjectives follow their noun); a word written
with a leading "=" is a fixed complement and stays as it is ("голова =крокодила").
To add a language, add its list here (or write the JSON by hand): templates name the forms they need.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "langclip" / "resources" / "classnames"

CIFAR10_EN = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_RU = ["самолёт", "автомобиль", "птица", "кошка", "олень", "собака", "лягушка", "лошадь", "корабль", "грузовик"]

CIFAR100_EN = [
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom", "oak tree", "orange", "orchid",
    "otter", "palm tree", "pear", "pickup truck", "pine tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow tree", "wolf",
    "woman", "worm"]
CIFAR100_RU = [
    "яблоко", "аквариумная рыбка", "младенец", "медведь", "бобр", "кровать", "пчела", "жук", "велосипед", "бутылка",
    "миска", "мальчик", "мост", "автобус", "бабочка", "верблюд", "консервная банка", "замок", "гусеница", "корова",
    "стул", "шимпанзе", "часы", "облако", "таракан", "диван", "краб", "крокодил", "чашка", "динозавр", "дельфин",
    "слон", "камбала", "лес", "лиса", "девочка", "хомяк", "дом", "кенгуру", "клавиатура", "лампа", "газонокосилка",
    "леопард", "лев", "ящерица", "омар", "мужчина", "клён", "мотоцикл", "гора", "мышь", "гриб", "дуб", "апельсин",
    "орхидея", "выдра", "пальма", "груша", "пикап", "сосна", "равнина", "тарелка", "мак", "дикобраз", "опоссум",
    "кролик", "енот", "скат", "дорога", "ракета", "роза", "море", "тюлень", "акула", "землеройка", "скунс",
    "небоскрёб", "улитка", "змея", "паук", "белка", "трамвай", "подсолнух", "сладкий перец", "стол", "танк",
    "телефон", "телевизор", "тигр", "трактор", "поезд", "форель", "тюльпан", "черепаха", "шкаф", "кит", "ива", "волк",
    "женщина", "червь"]

# torchvision's Caltech101 order: sorted folder names (upper case first), BACKGROUND_Google dropped
CALTECH101_EN = [
    "off-center face", "centered face", "leopard", "motorbike", "accordion", "airplane", "anchor", "ant", "barrel",
    "bass", "beaver", "binocular", "bonsai", "brain", "brontosaurus", "buddha", "butterfly", "camera", "cannon",
    "side of a car", "ceiling fan", "cellphone", "chair", "chandelier", "body of a cougar cat", "face of a cougar cat",
    "crab", "crayfish", "crocodile", "head of a crocodile", "cup", "dalmatian", "dollar bill", "dolphin", "dragonfly",
    "electric guitar", "elephant", "emu", "euphonium", "ewer", "ferry", "flamingo", "head of a flamingo", "garfield",
    "gerenuk", "gramophone", "grand piano", "hawksbill", "headphone", "hedgehog", "helicopter", "ibis", "inline skate",
    "joshua tree", "kangaroo", "ketch", "lamp", "laptop", "llama", "lobster", "lotus", "mandolin", "mayfly", "menorah",
    "metronome", "minaret", "nautilus", "octopus", "okapi", "pagoda", "panda", "pigeon", "pizza", "platypus",
    "pyramid", "revolver", "rhino", "rooster", "saxophone", "schooner", "scissors", "scorpion", "sea horse",
    "snoopy (cartoon beagle)", "soccer ball", "stapler", "starfish", "stegosaurus", "stop sign", "strawberry",
    "sunflower", "tick", "trilobite", "umbrella", "watch", "water lilly", "wheelchair", "wild cat", "windsor chair",
    "wrench", "yin and yang symbol"]
CALTECH101_RU = [
    "лицо =не =в =центре", "лицо =в =центре", "леопард", "мотоцикл", "аккордеон", "самолёт", "якорь", "муравей",
    "бочка", "окунь", "бобр", "бинокль", "бонсай", "мозг", "бронтозавр", "статуя =Будды", "бабочка", "фотоаппарат",
    "пушка", "автомобиль =сбоку", "потолочный вентилятор", "мобильный телефон", "стул", "люстра", "тело =пумы",
    "морда =пумы", "краб", "рак", "крокодил", "голова =крокодила", "чашка", "далматинец", "долларовая банкнота",
    "дельфин", "стрекоза", "электрогитара", "слон", "эму", "эуфониум", "кувшин", "паром", "фламинго",
    "голова =фламинго", "кот Гарфилд", "геренук", "граммофон", "рояль", "черепаха =бисса", "наушники", "ёж",
    "вертолёт", "ибис", "роликовый конёк", "дерево =Джошуа", "кенгуру", "двухмачтовая яхта", "лампа", "ноутбук",
    "лама", "омар", "лотос", "мандолина", "подёнка", "менора", "метроном", "минарет", "наутилус", "осьминог", "окапи",
    "пагода", "панда", "голубь", "пицца", "утконос", "пирамида", "револьвер", "носорог", "петух", "саксофон", "шхуна",
    "ножницы", "скорпион", "морской конёк", "пёс =Снупи", "футбольный мяч", "степлер", "морская звезда", "стегозавр",
    "знак =«стоп»", "клубника", "подсолнух", "клещ", "трилобит", "зонт", "наручные часы", "кувшинка",
    "инвалидная коляска", "дикая кошка", "виндзорский стул", "гаечный ключ", "символ =инь-ян"]

DATASETS = {"cifar10": (CIFAR10_EN, CIFAR10_RU), "cifar100": (CIFAR100_EN, CIFAR100_RU),
            "caltech101": (CALTECH101_EN, CALTECH101_RU)}


def ru_entry(phrase: str) -> dict:
    from langclip.morph import inflect_phrase   # the same code that inflects users' labels

    return {"nom": phrase.replace("=", ""), "gen": inflect_phrase(phrase, "gent")}


def build() -> dict[str, dict]:
    out = {}
    for name, (en, ru) in DATASETS.items():
        if len(en) != len(ru):
            raise ValueError(f"{name}: {len(en)} English names but {len(ru)} Russian")
        out[name] = {"en": en, "ru": [ru_entry(p) for p in ru]}
    return out


def render(d: dict) -> str:
    return json.dumps(d, ensure_ascii=False, indent=1) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    a = ap.parse_args(argv)
    stale = []
    for name, d in build().items():
        f = OUT / f"{name}.json"
        if a.check:
            if not f.is_file() or f.read_text(encoding="utf-8") != render(d):
                stale.append(f.name)
        else:
            f.write_text(render(d), encoding="utf-8")
            print(f"wrote {f} ({len(d['en'])} classes)")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/make_classnames.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
