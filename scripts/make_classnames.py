"""Regenerate langclip's shipped class names: src/langclip/resources/classnames/<dataset>.json.

    python scripts/make_classnames.py           # write the files
    python scripts/make_classnames.py --check   # exit 1 if the files differ from what this makes

Each file is {"en": [name, ...], "ru": [{"nom": ..., "gen": ...}, ...], "uk": [...]}, in the dataset's label order
(torchvision's: CIFAR's meta files, Caltech101's sorted folders without BACKGROUND_Google).
English names are CLIP's / CLIP_benchmark's. Russian and Ukrainian names are
written here in the nominative; the genitive (for templates such as "фото {gen}") is made with pymorphy3, so evaluation needs no
morphology at run time. In a phrase every word agrees (adjectives follow their noun); a word written
with a leading "=" is a fixed complement and stays as it is ("голова =крокодила"); "nom|gen" writes the
genitive out (borrowed words pymorphy3 does not know or declines wrongly).
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

# Ukrainian, in the same order (written for langclip in session 9; awaiting a native speaker's review)
CIFAR10_UK = ["літак", "автомобіль", "птах", "кіт", "олень", "собака", "жаба", "кінь", "корабель", "вантажівка"]
CIFAR100_UK = [
    "яблуко", "акваріумна рибка", "немовля", "ведмідь", "бобер", "ліжко", "бджола", "жук", "велосипед", "пляшка",
    "миска", "хлопчик", "міст", "автобус", "метелик", "верблюд", "консервна бляшанка", "замок", "гусінь", "корова",
    "стілець", "шимпанзе", "годинник", "хмара", "тарган", "диван", "краб", "крокодил", "чашка", "динозавр", "дельфін",
    "слон", "камбала", "ліс", "лисиця", "дівчинка", "хом'як", "будинок", "кенгуру", "клавіатура", "лампа",
    "газонокосарка", "леопард", "лев", "ящірка", "омар", "чоловік", "клен", "мотоцикл", "гора", "миша", "гриб", "дуб",
    "апельсин", "орхідея", "видра", "пальма", "груша", "пікап", "сосна", "рівнина", "тарілка", "мак", "дикобраз",
    "опосум", "кролик", "єнот", "скат", "дорога", "ракета", "троянда", "море", "тюлень", "акула", "землерийка", "скунс",
    "хмарочос", "равлик", "змія", "павук", "білка", "трамвай", "соняшник", "солодкий перець", "стіл", "танк",
    "телефон", "телевізор", "тигр", "трактор", "потяг", "форель", "тюльпан", "черепаха", "шафа", "кит", "верба",
    "вовк", "жінка", "черв'як"]

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

CALTECH101_UK = [
    "обличчя =не =в =центрі", "обличчя =в =центрі", "леопард", "мотоцикл", "акордеон", "літак", "якір", "мураха",
    "бочка", "окунь", "бобер", "бінокль", "бонсай", "мозок", "бронтозавр", "статуя =Будди", "метелик", "фотоапарат",
    "гармата", "автомобіль =збоку", "стельовий вентилятор", "мобільний телефон", "стілець", "люстра", "тіло =пуми",
    "морда =пуми", "краб", "рак", "крокодил", "голова =крокодила", "чашка", "далматинець", "доларова банкнота",
    "дельфін", "бабка", "електрогітара", "слон", "=ему", "еуфоніум", "глечик", "пором", "=фламінго",
    "голова =фламінго", "кіт Гарфілд|кота Гарфілда", "геренук", "грамофон", "рояль", "черепаха =бісса", "навушники", "їжак",
    "гелікоптер", "ібіс", "роликовий ковзан", "дерево =Джошуа", "кенгуру", "двощоглова яхта", "лампа", "ноутбук",
    "лама", "омар", "лотос", "мандоліна", "одноденка", "менора", "метроном", "мінарет", "наутилус", "восьминіг",
    "=окапі", "пагода", "панда", "голуб", "піца", "качкодзьоб", "піраміда", "револьвер", "носоріг", "півень",
    "саксофон", "шхуна", "ножиці", "скорпіон", "морський коник", "пес =Снупі", "футбольний м'яч", "степлер",
    "морська зірка", "стегозавр", "знак =«стоп»", "полуниця", "соняшник", "кліщ", "трилобіт", "парасолька",
    "наручний годинник", "водяна лілія", "інвалідний візок", "дикий кіт", "віндзорський стілець", "гайковий ключ",
    "символ =інь-ян"]

# Food-101 (torchvision's order: sorted folder names; CLIP_benchmark's English: "_" as spaces)
FOOD101 = [
    ("apple pie", "яблочный пирог"), ("baby back ribs", "свиные рёбрышки"), ("baklava", "пахлава"),
    ("beef carpaccio", "карпаччо =из =говядины"), ("beef tartare", "тартар =из =говядины"),
    ("beet salad", "свекольный салат"), ("beignets", "пончики =бенье"), ("bibimbap", "пибимпап"),
    ("bread pudding", "хлебный пудинг"), ("breakfast burrito", "буррито =на =завтрак"), ("bruschetta", "брускетта"),
    ("caesar salad", "салат =цезарь"), ("cannoli", "=канноли"), ("caprese salad", "салат =капрезе"),
    ("carrot cake", "морковный торт"), ("ceviche", "=севиче"), ("cheese plate", "сырная тарелка"),
    ("cheesecake", "чизкейк"), ("chicken curry", "карри с курицей|карри с курицей"), ("chicken quesadilla", "кесадилья =с =курицей"),
    ("chicken wings", "куриные крылышки"), ("chocolate cake", "шоколадный торт"), ("chocolate mousse", "шоколадный мусс"),
    ("churros", "=чуррос"), ("clam chowder", "суп =из =моллюсков"), ("club sandwich", "клаб-сэндвич|клаб-сэндвича"),
    ("crab cakes", "крабовые котлеты"), ("creme brulee", "крем-брюле"), ("croque madame", "=крок-мадам"),
    ("cup cakes", "капкейки"), ("deviled eggs", "фаршированные яйца"), ("donuts", "пончики"), ("dumplings", "пельмени"),
    ("edamame", "=эдамаме"), ("eggs benedict", "яйца =бенедикт"), ("escargots", "виноградные улитки"),
    ("falafel", "фалафель|фалафеля"), ("filet mignon", "филе-миньон"), ("fish and chips", "рыба =с =жареной =картошкой"),
    ("foie gras", "=фуа-гра"), ("french fries", "картофель =фри"), ("french onion soup", "французский луковый суп"),
    ("french toast", "французские тосты"), ("fried calamari", "жареные кальмары"), ("fried rice", "жареный рис"),
    ("frozen yogurt", "замороженный йогурт"), ("garlic bread", "чесночный хлеб"), ("gnocchi", "=ньокки"),
    ("greek salad", "греческий салат"), ("grilled cheese sandwich", "горячий бутерброд =с =сыром"),
    ("grilled salmon", "лосось =на =гриле"), ("guacamole", "=гуакамоле"), ("gyoza", "=гёдза"), ("hamburger", "гамбургер"),
    ("hot and sour soup", "кисло-острый суп"), ("hot dog", "хот-дог"), ("huevos rancheros", "=уэвос-ранчерос"),
    ("hummus", "хумус"), ("ice cream", "мороженое"), ("lasagna", "лазанья|лазаньи"), ("lobster bisque", "биск =из =омара"),
    ("lobster roll sandwich", "сэндвич =с =омаром"), ("macaroni and cheese", "макароны =с =сыром"),
    ("macarons", "макаруны"), ("miso soup", "мисо-суп"), ("mussels", "мидии"), ("nachos", "=начос"), ("omelette", "омлет"),
    ("onion rings", "луковые кольца"), ("oysters", "устрицы"), ("pad thai", "=пад-тай"), ("paella", "паэлья|паэльи"),
    ("pancakes", "панкейки"), ("panna cotta", "=панна-котта"), ("peking duck", "утка =по-пекински"), ("pho", "суп =фо"),
    ("pizza", "пицца"), ("pork chop", "свиная отбивная"), ("poutine", "картофель =фри =с =сыром =и =подливой"),
    ("prime rib", "ростбиф"), ("pulled pork sandwich", "сэндвич =с =рваной =свининой"), ("ramen", "рамен|рамена"),
    ("ravioli", "равиоли"), ("red velvet cake", "торт =красный =бархат"), ("risotto", "ризотто"), ("samosa", "самоса|самосы"),
    ("sashimi", "=сашими"), ("scallops", "морские гребешки"), ("seaweed salad", "салат =из =водорослей"),
    ("shrimp and grits", "креветки =с =кукурузной =кашей"), ("spaghetti bolognese", "спагетти =болоньезе"),
    ("spaghetti carbonara", "спагетти =карбонара"), ("spring rolls", "спринг-роллы"), ("steak", "стейк"),
    ("strawberry shortcake", "клубничный торт"), ("sushi", "=суши"), ("tacos", "тако"), ("takoyaki", "=такояки"),
    ("tiramisu", "=тирамису"), ("tuna tartare", "тартар =из =тунца"), ("waffles", "вафли")]


# Ukrainian, in the same order (written by a non-native speaker: awaiting a native speaker's review)
FOOD101_UK = [
    "яблучний пиріг", "свинячі реберця", "пахлава", "карпачо =з =яловичини", "тартар =з =яловичини", "буряковий салат",
    "пончики =беньє", "пібімпап|пібімпапу", "хлібний пудинг", "буріто на сніданок|буріто на сніданок", "брускета",
    "салат =цезар", "=канолі", "салат =капрезе", "морквяний торт", "=севіче", "сирна тарілка", "чизкейк",
    "каррі з куркою|каррі з куркою", "кесадилья з куркою|кесадильї з куркою", "курячі крильця", "шоколадний торт",
    "шоколадний мус", "=чурос", "суп =з =молюсків", "клаб-сендвіч|клаб-сендвіча", "крабові котлети",
    "крем-брюле|крем-брюле", "=крок-мадам", "капкейки", "фаршировані яйця", "пончики", "пельмені", "=едамаме",
    "яйця =бенедикт", "виноградні равлики", "фалафель|фалафеля", "філе-міньйон|філе-міньйона",
    "риба =з =картоплею =фрі", "=фуа-гра", "картопля =фрі", "французький цибулевий суп", "французькі тости",
    "смажені кальмари", "смажений рис", "заморожений йогурт", "часниковий хліб", "=ньокі", "грецький салат",
    "гарячий бутерброд =з =сиром", "лосось =на =грилі", "=гуакамоле", "=гьодза", "гамбургер", "кисло-гострий суп",
    "хот-дог", "=уевос-ранчерос", "хумус", "морозиво", "лазанья|лазаньї", "біск =з =омара", "сендвіч =з =омаром",
    "макарони =з =сиром", "макаруни|макарунів", "місо-суп|місо-супу", "мідії", "=начос", "омлет", "цибулеві кільця",
    "устриці", "=пад-тай", "паелья|паельї", "панкейки", "=панна-кота", "качка =по-пекінськи", "суп =фо", "піца",
    "свиняча відбивна", "картопля =фрі =з =сиром =і =підливою", "ростбіф", "сендвіч =з =рваною =свининою",
    "рамен|рамена", "равіолі|равіолі", "торт =червоний =оксамит", "різото|різото", "самоса|самоси", "=сашимі",
    "морські гребінці", "салат =з =водоростей", "креветки =з =кукурудзяною =кашею",
    "спагеті болоньєзе|спагеті болоньєзе", "спагеті карбонара|спагеті карбонара", "спрінг-роли|спрінг-ролів",
    "стейк", "полуничний торт", "=суші", "тако|тако", "=такоякі", "=тірамісу", "тартар =з =тунця", "вафлі"]

# Oxford Flowers-102 (torchvision's 0-based labels; CLIP_benchmark's English names)
FLOWERS102 = [
    ("pink primrose", "розовая энотера"), ("hard-leaved pocket orchid", "венерин башмачок|венерина башмачка"),
    ("canterbury bells", "средний колокольчик"), ("sweet pea", "душистый горошек"), ("english marigold", "календула"),
    ("tiger lily", "тигровая лилия"), ("moon orchid", "фаленопсис"), ("bird of paradise", "стрелиция"),
    ("monkshood", "аконит"), ("globe thistle", "мордовник"), ("snapdragon", "львиный зев"),
    ("colt's foot", "мать-и-мачеха"), ("king protea", "королевская протея|королевской протеи"), ("spear thistle", "чертополох"),
    ("yellow iris", "жёлтый ирис"), ("globe flower", "купальница"), ("purple coneflower", "эхинацея"),
    ("peruvian lily", "альстрёмерия"), ("balloon flower", "платикодон"), ("giant white arum lily", "белая калла"),
    ("fire lily", "глориоза|глориозы"), ("pincushion flower", "скабиоза"), ("fritillary", "рябчик"),
    ("red ginger", "красный имбирь"), ("grape hyacinth", "=мускари"), ("corn poppy", "полевой мак"),
    ("prince of wales feathers", "амарант"), ("stemless gentian", "бесстебельная горечавка"), ("artichoke", "артишок"),
    ("sweet william", "турецкая гвоздика"), ("carnation", "гвоздика"), ("garden phlox", "садовый флокс"),
    ("love in the mist", "нигелла"), ("mexican aster", "космея|космеи"), ("alpine sea holly", "альпийский синеголовник"),
    ("ruby-lipped cattleya", "каттлея"), ("cape flower", "=нерине"), ("great masterwort", "астранция"),
    ("siam tulip", "куркума"), ("lenten rose", "морозник"), ("barbeton daisy", "гербера|герберы"), ("daffodil", "нарцисс"),
    ("sword lily", "гладиолус"), ("poinsettia", "пуансеттия|пуансеттии"), ("bolero deep blue", "эустома"),
    ("wallflower", "желтофиоль"), ("marigold", "бархатцы"), ("buttercup", "лютик"), ("oxeye daisy", "нивяник"),
    ("common dandelion", "одуванчик"), ("petunia", "петуния"), ("wild pansy", "анютины глазки"), ("primula", "примула"),
    ("sunflower", "подсолнух"), ("pelargonium", "пеларгония"), ("bishop of llandaff", "красная георгина"),
    ("gaura", "гаура"), ("geranium", "герань"), ("orange dahlia", "оранжевая георгина"),
    ("pink and yellow dahlia", "розово-жёлтая георгина"), ("cautleya spicata", "каутлея"),
    ("japanese anemone", "японская анемона"), ("black-eyed susan", "рудбекия"), ("silverbush", "серебристый вьюнок"),
    ("californian poppy", "калифорнийский мак"), ("osteospermum", "остеоспермум"), ("spring crocus", "весенний крокус"),
    ("bearded iris", "бородатый ирис"), ("windflower", "анемона"), ("tree poppy", "древовидный мак"),
    ("gazania", "газания|газании"), ("azalea", "азалия"), ("water lily", "кувшинка"), ("rose", "роза"), ("thorn apple", "дурман"),
    ("morning glory", "ипомея"), ("passion flower", "пассифлора"), ("lotus", "лотос"), ("toad lily", "трициртис"),
    ("anthurium", "антуриум"), ("frangipani", "плюмерия"), ("clematis", "клематис"), ("hibiscus", "гибискус"),
    ("columbine", "аквилегия"), ("desert-rose", "адениум"), ("tree mallow", "лаватера|лаватеры"), ("magnolia", "магнолия"),
    ("cyclamen", "цикламен"), ("watercress", "водяной кресс"), ("canna lily", "канна"), ("hippeastrum", "гиппеаструм"),
    ("bee balm", "монарда"), ("air plant", "тилландсия"), ("foxglove", "наперстянка"), ("bougainvillea", "бугенвиллея|бугенвиллеи"),
    ("camellia", "камелия"), ("mallow", "мальва"), ("mexican petunia", "руэллия"), ("bromelia", "бромелия"),
    ("blanket flower", "гайлардия"), ("trumpet creeper", "кампсис"), ("blackberry lily", "беламканда|беламканды")]


FLOWERS102_UK = [
    "рожева енотера", "венерин черевичок|венериного черевичка", "середній дзвоник", "запашний горошок", "календула",
    "тигрова лілія", "фаленопсис", "стреліція", "аконіт", "головатень|головатня", "левова паща|левової пащі",
    "мати-й-мачуха|мати-й-мачухи", "королівська протея|королівської протеї", "будяк", "жовтий ірис", "купальниця",
    "ехінацея", "альстромерія", "платикодон", "біла калла", "глоріоза|глоріози", "скабіоза", "рябчик",
    "червоний імбир", "=мускарі", "польовий мак", "амарант", "безстебловий тирлич", "артишок", "турецька гвоздика",
    "гвоздика", "садовий флокс", "нігела", "космея|космеї", "альпійський миколайчик", "катлея|катлеї", "=нерине",
    "астранція", "куркума", "чемерник", "гербера|гербери", "нарцис", "гладіолус", "пуансетія|пуансетії", "еустома",
    "жовтофіоль|жовтофіолі", "чорнобривці|чорнобривців", "жовтець", "королиця", "кульбаба", "петунія",
    "братки|братків", "примула", "соняшник", "пеларгонія", "червона жоржина", "гаура", "герань",
    "помаранчева жоржина", "рожево-жовта жоржина", "каутлея|каутлеї", "японська анемона", "рудбекія",
    "сріблястий в'юнок", "каліфорнійський мак", "остеоспермум", "весняний крокус", "бородатий ірис", "анемона",
    "деревоподібний мак", "газанія|газанії", "азалія", "латаття|латаття", "троянда", "дурман", "іпомея",
    "пасифлора", "лотос", "трициртис", "антуріум", "плюмерія", "клематис", "гібіскус", "аквілегія", "аденіум",
    "лаватера|лаватери", "магнолія", "цикламен", "водяний крес", "канна", "гіпеаструм", "монарда", "тиландсія",
    "наперстянка", "бугенвілія|бугенвілії", "камелія", "мальва", "руелія", "бромелія", "гайлардія", "кампсис",
    "беламканда|беламканди"]

UK = {"cifar10": CIFAR10_UK, "cifar100": CIFAR100_UK, "caltech101": CALTECH101_UK, "food101": FOOD101_UK,
      "flowers102": FLOWERS102_UK}
DATASETS = {"cifar10": (CIFAR10_EN, CIFAR10_RU), "cifar100": (CIFAR100_EN, CIFAR100_RU),
            "caltech101": (CALTECH101_EN, CALTECH101_RU),
            "food101": ([e for e, _ in FOOD101], [r for _, r in FOOD101]),
            "flowers102": ([e for e, _ in FLOWERS102], [r for _, r in FLOWERS102])}


def entry(phrase: str, lang: str = "ru") -> dict:
    """"nom" or "nom|gen": the genitive by pymorphy3 (its Russian or Ukrainian dictionary), or written
    out where pymorphy3 does not know the word or declines a borrowed one wrongly (фалафель, лазанья)."""
    from langclip.morph import inflect_phrase   # the same code that inflects users' labels

    if "|" in phrase:
        nom, gen = phrase.split("|")
        return {"nom": nom, "gen": gen}
    return {"nom": phrase.replace("=", ""), "gen": inflect_phrase(phrase, "gent", lang=lang)}


def build() -> dict[str, dict]:
    out = {}
    for name, (en, ru) in DATASETS.items():
        for lang, names in (("ru", ru), ("uk", UK.get(name))):
            if names is not None and len(en) != len(names):
                raise ValueError(f"{name}: {len(en)} English names but {len(names)} in {lang}")
        out[name] = {"en": en, "ru": [entry(p) for p in ru]}
        if name in UK:
            out[name]["uk"] = [entry(p, "uk") for p in UK[name]]
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
