"""A procedurally generated bilingual image world: 64×64 pictures of 1–5 equal objects (shape,
colour, count, position) on noisy backgrounds, with English captions and grammatical ones in the
target language: Russian (the default), Ukrainian, German, Spanish (Latin-script languages) or Greek.

Agreement is spelled out in tables (checked against pymorphy3's dictionaries in the tests):
один красный круг · одна красная звезда · одно красное сердце · две красные звезды ·
два красных круга · пять красных кругов · красное сердце слева;
одне червоне коло · дві червоні зірки · два червоні квадрати · п'ять червоних кіл · червоне серце зліва;
ein roter Kreis · ein rotes Herz · zwei rote Sterne · fünf violette Dreiecke · rotes Herz links;
ένας κόκκινος κύκλος · μία κόκκινη καρδιά · δύο κόκκινα αστέρια · τρεις μπλε κύκλοι · κόκκινη καρδιά αριστερά;
un círculo rojo · una estrella roja · dos estrellas rojas · tres corazones azules · corazón rojo a la izquierda.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

SHAPES = ["circle", "square", "triangle", "star", "heart"]
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (40, 60, 220), "yellow": (235, 215, 20),
           "purple": (150, 40, 190), "black": (15, 15, 15)}
COUNTS = [1, 2, 3, 4, 5]
POSITIONS = ["left", "right", "top", "bottom", "centre"]

# Russian: noun gender and forms (nom sg, gen sg, nom pl, gen pl)
RU_NOUN = {"circle": ("m", "круг", "круга", "круги", "кругов"), "square": ("m", "квадрат", "квадрата", "квадраты", "квадратов"),
           "triangle": ("m", "треугольник", "треугольника", "треугольники", "треугольников"),
           "star": ("f", "звезда", "звезды", "звёзды", "звёзд"), "heart": ("n", "сердце", "сердца", "сердца", "сердец")}
# adjective: nom sg m, f, n; nom pl; gen pl
RU_ADJ = {"red": ("красный", "красная", "красное", "красные", "красных"),
          "green": ("зелёный", "зелёная", "зелёное", "зелёные", "зелёных"),
          "blue": ("синий", "синяя", "синее", "синие", "синих"),
          "yellow": ("жёлтый", "жёлтая", "жёлтое", "жёлтые", "жёлтых"),
          "purple": ("фиолетовый", "фиолетовая", "фиолетовое", "фиолетовые", "фиолетовых"),
          "black": ("чёрный", "чёрная", "чёрное", "чёрные", "чёрных")}
RU_NUM = {1: {"m": "один", "f": "одна", "n": "одно"}, 2: {"m": "два", "f": "две", "n": "два"},
          3: {"m": "три", "f": "три", "n": "три"}, 4: {"m": "четыре", "f": "четыре", "n": "четыре"},
          5: {"m": "пять", "f": "пять", "n": "пять"}}
RU_POS = {"left": "слева", "right": "справа", "top": "сверху", "bottom": "снизу", "centre": "в центре"}
# Ukrainian: noun gender and forms (nom sg, gen sg, nom pl, gen pl); with 2-4 the noun and its adjective
# take the nominative plural ("дві червоні зірки", "два червоні квадрати"), from 5 the genitive plural
UK_NOUN = {"circle": ("n", "коло", "кола", "кола", "кіл"), "square": ("m", "квадрат", "квадрата", "квадрати", "квадратів"),
           "triangle": ("m", "трикутник", "трикутника", "трикутники", "трикутників"),
           "star": ("f", "зірка", "зірки", "зірки", "зірок"), "heart": ("n", "серце", "серця", "серця", "сердець")}
UK_ADJ = {"red": ("червоний", "червона", "червоне", "червоні", "червоних"),
          "green": ("зелений", "зелена", "зелене", "зелені", "зелених"),
          "blue": ("синій", "синя", "синє", "сині", "синіх"),
          "yellow": ("жовтий", "жовта", "жовте", "жовті", "жовтих"),
          "purple": ("фіолетовий", "фіолетова", "фіолетове", "фіолетові", "фіолетових"),
          "black": ("чорний", "чорна", "чорне", "чорні", "чорних")}
UK_NUM = {1: {"m": "один", "f": "одна", "n": "одне"}, 2: {"m": "два", "f": "дві", "n": "два"},
          3: {"m": "три", "f": "три", "n": "три"}, 4: {"m": "чотири", "f": "чотири", "n": "чотири"},
          5: {"m": "п'ять", "f": "п'ять", "n": "п'ять"}}
UK_POS = {"left": "зліва", "right": "справа", "top": "зверху", "bottom": "знизу", "centre": "у центрі"}
# German: noun gender, singular, plural; adjective stem (strong endings: -er m, -es n, -e plural, as after
# "ein" and the numerals: "ein roter Kreis", "ein rotes Herz", "zwei rote Sterne")
DE_NOUN = {"circle": ("m", "Kreis", "Kreise"), "square": ("n", "Quadrat", "Quadrate"),
           "triangle": ("n", "Dreieck", "Dreiecke"), "star": ("m", "Stern", "Sterne"), "heart": ("n", "Herz", "Herzen")}
DE_ADJ = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett", "black": "schwarz"}
DE_NUM = {1: "ein", 2: "zwei", 3: "drei", 4: "vier", 5: "fünf"}
DE_POS = {"left": "links", "right": "rechts", "top": "oben", "bottom": "unten", "centre": "in der Mitte"}
# Greek: noun gender, singular, plural; adjective forms (sg m, f, n; pl m, f, n; μπλε and μωβ do not
# decline); numerals by gender where they have one (ένας/μία/ένα, τρεις/τρία, τέσσερις/τέσσερα)
EL_NOUN = {"circle": ("m", "κύκλος", "κύκλοι"), "square": ("n", "τετράγωνο", "τετράγωνα"),
           "triangle": ("n", "τρίγωνο", "τρίγωνα"), "star": ("n", "αστέρι", "αστέρια"), "heart": ("f", "καρδιά", "καρδιές")}
_EL_FORMS = "{0}ος {0}η {0}ο {0}οι {0}ες {0}α"
EL_ADJ = {"red": _EL_FORMS.format("κόκκιν").split(), "green": _EL_FORMS.format("πράσιν").split(),
          "blue": ["μπλε"] * 6, "yellow": _EL_FORMS.format("κίτριν").split(), "purple": ["μωβ"] * 6,
          "black": _EL_FORMS.format("μαύρ").split()}
EL_NUM = {1: {"m": "ένας", "f": "μία", "n": "ένα"}, 2: {"m": "δύο", "f": "δύο", "n": "δύο"},
          3: {"m": "τρεις", "f": "τρεις", "n": "τρία"}, 4: {"m": "τέσσερις", "f": "τέσσερις", "n": "τέσσερα"},
          5: {"m": "πέντε", "f": "πέντε", "n": "πέντε"}}
EL_POS = {"left": "αριστερά", "right": "δεξιά", "top": "πάνω", "bottom": "κάτω", "centre": "στο κέντρο"}
# Spanish: noun gender, singular, plural; the adjective follows the noun and agrees (verde, azul: one form per
# number); "un círculo rojo", "una estrella roja", "dos estrellas rojas", "tres corazones azules"
ES_NOUN = {"circle": ("m", "círculo", "círculos"), "square": ("m", "cuadrado", "cuadrados"),
           "triangle": ("m", "triángulo", "triángulos"), "star": ("f", "estrella", "estrellas"),
           "heart": ("m", "corazón", "corazones")}
_ES_FORMS = "{0}o {0}a {0}os {0}as"
ES_ADJ = {"red": _ES_FORMS.format("roj").split(), "green": ["verde", "verde", "verdes", "verdes"],
          "blue": ["azul", "azul", "azules", "azules"], "yellow": _ES_FORMS.format("amarill").split(),
          "purple": _ES_FORMS.format("morad").split(), "black": _ES_FORMS.format("negr").split()}
ES_NUM = {1: {"m": "un", "f": "una"}, 2: "dos", 3: "tres", 4: "cuatro", 5: "cinco"}
ES_POS = {"left": "a la izquierda", "right": "a la derecha", "top": "arriba", "bottom": "abajo", "centre": "en el centro"}
EN_NUM = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
EN_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "heart": "hearts"}
EN_POS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom", "centre": "in the centre"}


def _slavic_phrase(noun: dict, adj: dict, num: dict, few, count: int, colour: str, shape: str,
                   with_number: bool) -> str:
    """Numeral + adjective + noun agreeing as Russian and Ukrainian do; `few(gender, adjective forms,
    noun forms)` -> (adjective, noun) after 2, 3 and 4, where the two languages differ."""
    g, nom_sg, gen_sg, nom_pl, gen_pl = noun[shape]
    a_m, a_f, a_n, a_pl, a_gen_pl = adj[colour]
    if count == 1:
        a = {"m": a_m, "f": a_f, "n": a_n}[g]
        return f"{num[1][g]} {a} {nom_sg}" if with_number else f"{a} {nom_sg}"
    if count in (2, 3, 4):
        a, n = few(g, (a_pl, a_gen_pl), (gen_sg, nom_pl))
        return f"{num[count][g]} {a} {n}"
    return f"{num[count][g]} {a_gen_pl} {gen_pl}"


def ru_phrase(count: int, colour: str, shape: str, with_number: bool = True) -> str:
    """'две красные звезды', 'пять красных кругов', 'красное сердце' (count 1, no number)."""
    # две красные звезды, два красных круга: genitive singular noun; adjective nom pl (f) or gen pl
    few = lambda g, a, n: (a[0] if g == "f" else a[1], n[0])     # noqa: E731
    return _slavic_phrase(RU_NOUN, RU_ADJ, RU_NUM, few, count, colour, shape, with_number)


def uk_phrase(count: int, colour: str, shape: str, with_number: bool = True) -> str:
    """'дві червоні зірки', 'п'ять червоних кіл', 'червоне серце' (count 1, no number)."""
    few = lambda g, a, n: (a[0], n[1])      # noqa: E731   два червоні квадрати: both nominative plural
    return _slavic_phrase(UK_NOUN, UK_ADJ, UK_NUM, few, count, colour, shape, with_number)


def _agreed(count: int, with_number: bool, number: str, adjective: str, noun: str, noun_first: bool = False) -> str:
    """Numeral + adjective + noun already agreeing; count 1 without its number: adjective and noun alone."""
    body = f"{noun} {adjective}" if noun_first else f"{adjective} {noun}"
    return f"{number} {body}" if count > 1 or with_number else body


def de_phrase(count: int, colour: str, shape: str, with_number: bool = True) -> str:
    """'zwei rote Sterne', 'ein rotes Herz', 'roter Kreis' (count 1, no number: the same strong ending)."""
    g, sg, pl = DE_NOUN[shape]
    ending = ("er" if g == "m" else "es") if count == 1 else "e"
    return _agreed(count, with_number, DE_NUM[count], DE_ADJ[colour] + ending, sg if count == 1 else pl)


def el_phrase(count: int, colour: str, shape: str, with_number: bool = True) -> str:
    """'δύο κόκκινα αστέρια', 'μία κόκκινη καρδιά', 'τρεις μπλε κύκλοι', 'κόκκινη καρδιά' (no number)."""
    g, sg, pl = EL_NOUN[shape]
    i = "mfn".index(g) + (3 if count > 1 else 0)
    return _agreed(count, with_number, EL_NUM[count][g], EL_ADJ[colour][i], sg if count == 1 else pl)


def es_phrase(count: int, colour: str, shape: str, with_number: bool = True) -> str:
    """'dos estrellas rojas', 'un corazón rojo', 'estrella roja' (count 1, no number)."""
    g, sg, pl = ES_NOUN[shape]
    i = int(g == "f") + (2 if count > 1 else 0)
    number = ES_NUM[1][g] if count == 1 else ES_NUM[count]
    return _agreed(count, with_number, number, ES_ADJ[colour][i], sg if count == 1 else pl, noun_first=True)


def en_phrase(count: int, colour: str, shape: str, with_number: bool = True) -> str:
    if count == 1:
        return f"{'one' if with_number else 'a'} {colour} {shape}"
    return f"{EN_NUM[count]} {colour} {EN_PLURAL[shape]}"


# colour-shape combinations the students never read (the teacher does): a student's zero-shot accuracy on them
HELD_OUT = {("red", "star"), ("blue", "heart"), ("green", "triangle"), ("yellow", "square"), ("purple", "circle")}
# the target languages: phrase, positions, "a picture of ...", "an image with ...", the language's name
LANGS = {"ru": (ru_phrase, RU_POS, "на картинке", "изображение:", "Russian"),
         "uk": (uk_phrase, UK_POS, "на картинці", "зображення:", "Ukrainian"),
         "de": (de_phrase, DE_POS, "auf dem Bild:", "zu sehen:", "German"),
         "el": (el_phrase, EL_POS, "στην εικόνα", "εικόνα:", "Greek"),
         "es": (es_phrase, ES_POS, "en la imagen:", "imagen:", "Spanish")}
NOUN_FIRST = {"es"}   # languages whose adjective follows the noun (the report's class names pick the words)
# the tokenizer recipe per language where it differs (docs/recipe.md): German's and Spanish's ASCII words merge too
# (`--english-words`: wordfreq's 100k most frequent English words keep CLIP's ids)
TOKENIZER_OPTIONS = {"de": {"english_words": 100_000}, "es": {"english_words": 100_000}}


def captions(count: int, colour: str, shape: str, position: str | None, rng: random.Random,
             lang: str = "ru") -> tuple[list[str], list[str]]:
    """Paraphrases in English and in `lang`, aligned one to one."""
    phrase, pos, picture, image, _ = LANGS[lang]
    en, tg = [en_phrase(count, colour, shape)], [phrase(count, colour, shape)]
    en.append(f"a picture of {en[0]}")
    tg.append(f"{picture} {tg[0]}")
    if count == 1 and position:
        en.append(f"{en_phrase(1, colour, shape, False)} {EN_POS[position]}")
        tg.append(f"{phrase(1, colour, shape, False)} {pos[position]}")
    else:
        en.append(f"an image with {en[0]}")
        tg.append(f"{image} {tg[0]}")
    return en, tg


@dataclass
class Scene:
    shape: str
    colour: str
    count: int
    position: str | None
    seed: int


def _shape_mask(shape: str, cx: float, cy: float, r: float, yy, xx):
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (abs(dx) <= r * 0.85) & (abs(dy) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6)
    ang = np.arctan2(dy, dx)
    rad = np.sqrt(dx * dx + dy * dy)
    if shape == "star":
        lim = r * (0.45 + 0.55 * (np.cos(5 * ang + math.pi / 2) * 0.5 + 0.5))
        return rad <= lim
    # heart
    x, y = dx / r, -dy / r
    return (x * x + (y - np.sqrt(np.abs(x)) * 0.8) ** 2) <= 0.9


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """(size, size, 3) uint8 image of the scene."""
    rng = np.random.default_rng(scene.seed)
    base = rng.integers(150, 255, size=3)
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = base
    img += rng.normal(0, 12, size=(size, size, 3))                   # noise
    gx = np.linspace(-1, 1, size)[None, :, None] * rng.normal(0, 20, size=3)
    img += gx                                                        # a gradient
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = size * (0.16 if scene.count == 1 else 0.11 if scene.count <= 3 else 0.09) * rng.uniform(0.85, 1.15)
    centres = []
    if scene.count == 1 and scene.position:
        m = size * 0.25
        c = {"left": (m, size / 2), "right": (size - m, size / 2), "top": (size / 2, m),
             "bottom": (size / 2, size - m), "centre": (size / 2, size / 2)}[scene.position]
        centres.append((c[0] + rng.uniform(-3, 3), c[1] + rng.uniform(-3, 3)))
    tries = 0
    while len(centres) < scene.count and tries < 500:
        tries += 1
        c = (rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1))
        if all((c[0] - a) ** 2 + (c[1] - b) ** 2 > (2.1 * r) ** 2 for a, b in centres):
            centres.append(c)
    col = np.array(COLOURS[scene.colour], dtype=np.float32)
    for cx, cy in centres:
        mask = _shape_mask(scene.shape, cx, cy, r, yy, xx)
        img[mask] = col + rng.normal(0, 6, size=(int(mask.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_scenes(n: int, seed: int, exclude: set[tuple[str, str]] | None = None,
                  only: set[tuple[str, str]] | None = None) -> list[Scene]:
    """n random scenes; (colour, shape) combinations in `exclude` never occur, or only those in `only`."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        if exclude and (colour, shape) in exclude or only and (colour, shape) not in only:
            continue
        count = rng.choice(COUNTS)
        pos = rng.choice(POSITIONS) if count == 1 else None
        out.append(Scene(shape, colour, count, pos, rng.randrange(1 << 30)))
    return out
