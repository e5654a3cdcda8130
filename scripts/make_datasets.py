#!/usr/bin/env python3
"""Build the small sample datasets shipped in ``assets/datasets/``.

Everything here is written by the LLM Explorer authors (Apache-2.0): word
lists, sentence templates and facts. A seeded random generator composes them,
so the output is the same byte for byte on every run and every machine.

    python scripts/make_datasets.py            # (re)write assets/datasets/*
    python scripts/make_datasets.py --check    # exit 1 if the files on disk differ

Files produced:

* ``corpus_fr.txt`` / ``corpus_en.txt``: encyclopaedia-style prose (invented
  towns, recipes, weather bulletins, tales, animals, science), one document
  per paragraph, documents separated by a blank line;
* ``instructions_fr_en.json``: Alpaca-style ``{instruction, input, output}``
  examples in French and English whose answers are computed, hence correct;
* ``tickets_fr.csv``: French IT-support tickets labelled with one of five
  classes (``text,label``).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
from pathlib import Path

SEED = 20240917
OUT_DIR = Path(__file__).resolve().parent.parent / "assets" / "datasets"

# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _town_name(rng: random.Random, starts: list[str], ends: list[str], used: set[str]) -> str:
    while True:
        name = rng.choice(starts) + rng.choice(ends)
        if name not in used:
            used.add(name)
            return name


# ---------------------------------------------------------------------------
# French corpus
# ---------------------------------------------------------------------------

FR_TOWN_START = ["Bel", "Mont", "Val", "Roche", "Fonte", "Castel", "Beau", "Ville", "Mar",
                 "Clair", "Haut", "Lor", "Sau", "Bois", "Pier", "Ros", "Vaux", "Cour", "Arm",
                 "Lan"]
FR_TOWN_END = ["ville", "mont", "court", "lieu", "bourg", "fort", "champ", "val", "mesnil",
               "ac", "ignac", "eau", "ière", "anges", "oux", "ières", "ois", "ange"]
FR_RIVERS = ["la Sorne", "la Vézère", "l'Aubette", "la Lisle", "l'Orbe", "la Durance", "la Brême",
             "la Vanne", "la Saulde", "l'Arnon"]
FR_SETTINGS = [
    "au bord de {river}", "au pied d'une colline couverte de vignes", "sur une côte rocheuse",
    "dans une vallée boisée", "au milieu d'une vaste plaine agricole",
    "au confluent de deux petites rivières", "sur un plateau balayé par le vent",
    "à l'entrée d'un massif forestier", "près d'un grand lac", "le long d'un ancien canal",
]
FR_ECONOMY = [
    "l'agriculture et l'élevage de vaches laitières", "la pêche et la vente de coquillages",
    "la fabrication de meubles en chêne", "le tourisme et la randonnée",
    "la culture de la vigne et la production de vin", "une fromagerie réputée dans toute la région",
    "une usine de papier installée au siècle dernier", "l'artisanat du cuir et de la poterie",
    "la culture des pommes et la fabrication de cidre", "un petit port de plaisance",
    "des ateliers de tissage", "la culture des céréales et des betteraves",
]
FR_MONUMENTS = [
    ("une église romane", "construite au {c} siècle"),
    ("un château fort", "bâti au {c} siècle"),
    ("un pont de pierre", "construit au {c} siècle"),
    ("un moulin à eau", "restauré au {c} siècle"),
    ("une halle couverte", "construite au {c} siècle"),
    ("un phare", "allumé pour la première fois au {c} siècle"),
    ("une abbaye", "fondée au {c} siècle"),
    ("une tour de guet", "élevée au {c} siècle"),
]
FR_CENTURIES = ["XIe", "XIIe", "XIIIe", "XIVe", "XVe", "XVIe", "XVIIe", "XVIIIe", "XIXe"]
FR_DAYS = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
FR_SQUARES = ["de la Mairie", "du Marché", "des Tilleuls", "de l'Église", "du Four", "des Halles"]
FR_MARKET_GOODS = ["des fruits et des légumes", "des fromages de chèvre", "du poisson frais",
                   "du miel et des confitures", "des fleurs et des plants", "du pain de campagne"]
FR_SPECIALITIES = [
    ("une galette de sarrasin", "un bol de cidre"), ("une tourte à la viande", "une salade verte"),
    ("un gâteau aux noix", "une crème légère"), ("une soupe de poisson", "des croûtons grillés"),
    ("un ragoût de lentilles", "du pain de seigle"), ("une tarte aux prunes", "une boule de glace"),
    ("un fromage affiné", "des pommes de terre"), ("des crêpes au miel", "du lait ribot"),
]
FR_CLIMATES = [
    "doux et humide, avec des hivers rarement froids",
    "chaud en été et assez froid en hiver",
    "venteux, surtout au printemps",
    "ensoleillé, avec peu de pluie en été",
    "frais, car la ville est en altitude",
    "changeant, avec de fréquentes averses",
]
FR_EVENTS = [
    "une fête de la musique qui dure trois jours", "une course de bateaux sur la rivière",
    "une foire aux livres anciens", "un festival de contes pour enfants",
    "une grande fête des moissons", "un concours de pâtisserie",
    "un carnaval avec des chars décorés", "une nuit des étoiles pour observer le ciel",
]
FR_SEASONS = ["au printemps", "en été", "à l'automne", "en hiver", "au début de l'été",
              "à la fin de l'automne"]


def fr_town(rng: random.Random, used: set[str]) -> str:
    name = _town_name(rng, FR_TOWN_START, FR_TOWN_END, used)
    setting = rng.choice(FR_SETTINGS).format(river=rng.choice(FR_RIVERS))
    monument, built = rng.choice(FR_MONUMENTS)
    dish, side = rng.choice(FR_SPECIALITIES)
    pop = rng.choice([800, 1200, 1500, 2300, 3400, 4800, 6100, 8500, 12000, 15500, 21000])
    sentences = [
        f"{name} est une petite ville située {setting}.",
        f"Elle compte environ {pop} habitants.",
        f"Son économie repose surtout sur {rng.choice(FR_ECONOMY)}.",
        f"Au centre, on peut visiter {monument}, {built.format(c=rng.choice(FR_CENTURIES))}.",
        f"Chaque {rng.choice(FR_DAYS)}, le marché de la place {rng.choice(FR_SQUARES)} propose "
        f"{rng.choice(FR_MARKET_GOODS)}.",
        f"La spécialité locale est {dish}, que l'on sert avec {side}.",
        f"Le climat y est {rng.choice(FR_CLIMATES)}.",
        f"{_cap(rng.choice(FR_SEASONS))}, la ville organise {rng.choice(FR_EVENTS)}.",
    ]
    first, rest = sentences[:2], sentences[2:]
    rng.shuffle(rest)
    return " ".join(first + rest[: rng.randint(3, 6)])


FR_RECIPES = [
    ("une soupe de poireaux", ["des poireaux", "des pommes de terre", "un oignon", "du beurre"],
     ["émincez les poireaux et l'oignon", "faites-les revenir dans le beurre",
      "ajoutez les pommes de terre coupées en dés et couvrez d'eau", "mixez la soupe"], "chaude"),
    ("une tarte aux pommes", ["une pâte brisée", "des pommes", "du sucre", "de la cannelle"],
     ["étalez la pâte dans un moule", "épluchez et coupez les pommes en fines lamelles",
      "disposez les pommes en rosace", "saupoudrez de sucre et de cannelle"], "tiède"),
    ("un gratin de courgettes", ["des courgettes", "de la crème", "du fromage râpé", "de l'ail"],
     ["coupez les courgettes en rondelles", "frottez le plat avec l'ail",
      "alternez les courgettes et la crème", "couvrez de fromage râpé"], "chaud"),
    ("une omelette aux herbes", ["des œufs", "du persil", "de la ciboulette", "du beurre"],
     ["battez les œufs avec une pincée de sel", "hachez finement les herbes",
      "faites fondre le beurre dans une poêle", "versez les œufs et ajoutez les herbes"], "chaude"),
    ("une salade de lentilles", ["des lentilles vertes", "une échalote", "du vinaigre", "de l'huile"],
     ["rincez les lentilles", "faites-les cuire dans de l'eau non salée",
      "préparez une vinaigrette avec l'huile et le vinaigre", "ajoutez l'échalote hachée"], "froide"),
    ("un riz au lait", ["du riz rond", "du lait", "du sucre", "une gousse de vanille"],
     ["faites chauffer le lait avec la vanille", "versez le riz en pluie",
      "remuez souvent pour qu'il n'attache pas", "ajoutez le sucre en fin de cuisson"], "froid"),
    ("des crêpes", ["de la farine", "des œufs", "du lait", "une pincée de sel"],
     ["mélangez la farine et le sel", "ajoutez les œufs un par un",
      "versez le lait petit à petit en fouettant", "laissez reposer la pâte une heure"], "chaudes"),
    ("une ratatouille", ["des tomates", "des aubergines", "des poivrons", "des courgettes"],
     ["coupez tous les légumes en cubes", "faites revenir les aubergines dans l'huile",
      "ajoutez les poivrons et les courgettes", "terminez par les tomates et le thym"], "chaude"),
    ("un pain perdu", ["du pain rassis", "du lait", "des œufs", "du sucre"],
     ["coupez le pain en tranches épaisses", "battez les œufs avec le lait et le sucre",
      "trempez chaque tranche dans le mélange", "dorez les tranches à la poêle"], "tiède"),
    ("une purée de carottes", ["des carottes", "du beurre", "du lait", "de la muscade"],
     ["épluchez les carottes", "faites-les cuire à l'eau jusqu'à ce qu'elles soient tendres",
      "écrasez-les avec le beurre et le lait", "ajoutez un peu de muscade"], "chaude"),
    ("une compote de poires", ["des poires", "un peu d'eau", "du sucre", "un citron"],
     ["épluchez les poires et retirez le cœur", "coupez-les en morceaux",
      "faites-les cuire avec l'eau et le sucre", "ajoutez le jus du citron"], "froide"),
    ("un potage de potiron", ["du potiron", "un oignon", "du bouillon", "de la crème"],
     ["coupez le potiron en gros cubes", "faites revenir l'oignon",
      "ajoutez le potiron et le bouillon", "mixez et ajoutez la crème"], "chaud"),
]
FR_RECIPE_OPEN = [
    "Pour préparer {dish} pour {n} personnes, il faut {ing}.",
    "Voici comment réussir {dish} pour {n} personnes. Il vous faut {ing}.",
    "{Dish} est un plat simple qui se prépare avec {ing}. Cette recette est prévue pour {n} personnes.",
]
FR_CONNECTORS = ["Commencez par", "Ensuite,", "Puis", "Après cela,", "Enfin,"]
FR_RECIPE_CLOSE = [
    "Laissez cuire {t} minutes à feu {heat}.", "Comptez environ {t} minutes de cuisson à feu {heat}.",
    "La cuisson dure à peu près {t} minutes à feu {heat}.",
]
FR_SERVE = ["Servez {temp}.", "Ce plat se déguste {temp}.", "Il est meilleur servi {temp}."]


def _fr_join(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " et " + items[-1] if len(items) > 1 else items[0]


# usual cooking time in minutes, in the order of the recipe lists (French and English)
RECIPE_MINUTES = [25, 35, 30, 5, 25, 40, 3, 45, 5, 20, 15, 30]


def _cooking(rng: random.Random, minutes: int, heats: list[str]) -> tuple[int, str]:
    t = max(2, minutes + rng.choice([-5, 0, 0, 5])) if minutes > 5 else minutes
    return t, heats[2] if minutes <= 5 else rng.choice(heats[:2])


def fr_recipe(rng: random.Random, recipe, minutes: int) -> str:
    dish, ingredients, steps, temp = recipe
    ing = list(ingredients)
    rng.shuffle(ing)
    n = rng.choice([2, 4, 6])
    opener = rng.choice(FR_RECIPE_OPEN).format(dish=dish, Dish=_cap(dish), n=n, ing=_fr_join(ing))
    parts = [opener]
    for i, step in enumerate(steps):
        if i == 0:
            parts.append(f"Commencez par {_fr_infinitive(step)}.")
        else:
            conn = rng.choice(["Ensuite,", "Puis", "Après cela,"]) if i < len(steps) - 1 else "Enfin,"
            parts.append(f"{conn} {step}.")
    t, heat = _cooking(rng, minutes, ["doux", "moyen", "vif"])
    parts.append(rng.choice(FR_RECIPE_CLOSE).format(t=t, heat=heat))
    parts.append(rng.choice(FR_SERVE).format(temp=temp))
    return " ".join(parts)


_FR_IMPERATIVE_TO_INF = {
    "émincez": "émincer", "étalez": "étaler", "coupez": "couper", "battez": "battre",
    "rincez": "rincer", "faites": "faire", "mélangez": "mélanger", "épluchez": "éplucher",
}


def _fr_infinitive(step: str) -> str:
    head, _, tail = step.partition(" ")
    inf = _FR_IMPERATIVE_TO_INF.get(head, head)
    return f"{inf} {tail}"


FR_REGIONS = ["la côte nord", "les vallées de l'est", "le plateau central", "le littoral sud",
              "les montagnes de l'ouest", "la grande plaine", "le bassin du fleuve", "les îles"]
FR_MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
             "septembre", "octobre", "novembre", "décembre"]
FR_SKIES = ["dégagé", "voilé", "couvert", "nuageux", "gris et bas", "lumineux"]
FR_AFTERNOON = [
    "des averses éclateront en fin de journée", "le soleil reviendra largement",
    "quelques orages pourront gronder sur les reliefs", "une pluie fine tombera sans interruption",
    "les nuages se dissiperont lentement", "le brouillard persistera dans les vallées",
    "de la neige pourra tomber au-dessus de mille mètres",
]
FR_WIND = ["faiblement", "modérément", "fort", "en rafales"]
FR_DIRS = ["du nord", "du sud", "de l'ouest", "du nord-ouest", "du sud-est", "du nord-est"]
FR_ADVICE = [
    "Pensez à prendre un parapluie.", "Une bonne journée pour sortir à vélo.",
    "Prudence sur les routes glissantes.", "Les jardiniers pourront arroser le soir.",
    "Couvrez-vous bien le matin.", "Évitez les efforts aux heures les plus chaudes.",
    "Les marins sont invités à rester au port.",
]


def fr_weather(rng: random.Random) -> str:
    month = rng.randrange(12)
    base = [2, 4, 8, 11, 15, 19, 22, 22, 18, 13, 7, 3][month]
    lo = base + rng.randint(-4, 2)
    hi = lo + rng.randint(4, 11)
    day = rng.randint(1, 28)
    parts = [
        f"Bulletin météo pour {rng.choice(FR_REGIONS)}, {rng.choice(FR_DAYS)} {day} "
        f"{FR_MONTHS[month]}.",
        f"Le matin, le ciel sera {rng.choice(FR_SKIES)} et les températures iront de {lo} à "
        f"{hi} degrés.",
        f"L'après-midi, {rng.choice(FR_AFTERNOON)}.",
        f"Le vent soufflera {rng.choice(FR_WIND)} {rng.choice(FR_DIRS)}.",
        rng.choice(FR_ADVICE),
    ]
    return " ".join(parts)


# (subject, pronoun, agreement suffix for past participles)
FR_HEROES = [
    ("une jeune meunière", "elle", "e"), ("un vieux pêcheur", "il", ""),
    ("une petite renarde", "elle", "e"), ("un berger très curieux", "il", ""),
    ("une horlogère habile", "elle", "e"), ("un boulanger rêveur", "il", ""),
    ("une princesse têtue", "elle", "e"), ("un hérisson courageux", "il", ""),
    ("une tisserande patiente", "elle", "e"), ("un marin sans bateau", "il", ""),
]
FR_HOMES = ["au bord d'un étang", "dans une forêt profonde", "en haut d'une tour",
            "dans un village de montagne", "près d'un vieux pont", "sur une île minuscule"]
FR_HABITS = ["comptait les nuages", "saluait le soleil", "allait chercher de l'eau à la source",
             "réparait les filets", "chantait pour les oiseaux", "rangeait ses outils avec soin"]
FR_TROUBLES = ["la rivière cessa de couler", "le vent emporta toutes les lanternes du village",
               "un brouillard épais recouvrit la vallée", "la cloche de la tour se tut",
               "les abeilles quittèrent leurs ruches", "une étoile tomba dans le jardin"]
FR_MEETS = ["une chouette savante", "un géant timide", "une vieille tortue",
            "un loup qui avait perdu sa voix", "un enfant qui parlait aux pierres", "un corbeau bavard"]
FR_GIFTS = ["une clé d'argent", "une carte dessinée sur une feuille", "une graine lumineuse",
            "un sifflet de bois", "un fil qui ne cassait jamais", "une chanson oubliée"]
FR_ENDINGS = ["la vallée ne manqua plus jamais de rien", "les habitants racontent cette histoire "
              "aux enfants chaque hiver", "on dit que la patience vaut mieux que la force",
              "tout le village fête ce jour au printemps", "personne n'a oublié ce voyage"]


def fr_tale(rng: random.Random) -> str:
    hero, pron, agr = rng.choice(FR_HEROES)
    Pron = _cap(pron)
    days = rng.choice(["trois jours", "sept jours", "une semaine", "un mois", "deux nuits"])
    parts = [
        f"Il était une fois {hero} qui vivait {rng.choice(FR_HOMES)}.",
        f"Chaque matin, {pron} {rng.choice(FR_HABITS)}.",
        f"Un jour, {rng.choice(FR_TROUBLES)}.",
        f"{Pron} décida de partir pour comprendre ce qui se passait.",
        f"Après {days} de marche, {pron} rencontra {rng.choice(FR_MEETS)} qui lui offrit "
        f"{rng.choice(FR_GIFTS)}.",
        f"Grâce à ce cadeau, {pron} répara ce qui était cassé et rentra chez {'elle' if agr else 'lui'}.",
        f"Depuis ce jour, {rng.choice(FR_ENDINGS)}.",
    ]
    return " ".join(parts)


FR_ANIMALS = [
    "Le hérisson est un petit mammifère dont le dos est couvert de piquants. Il se nourrit "
    "surtout d'insectes, de vers et de limaces. Il sort la nuit pour chercher sa nourriture et "
    "passe l'hiver à hiberner dans un nid de feuilles.",
    "L'abeille domestique vit en colonie dans une ruche. Les ouvrières récoltent le nectar et le "
    "pollen des fleurs et fabriquent le miel. En allant de fleur en fleur, elles participent à la "
    "pollinisation de nombreuses plantes.",
    "La chouette est un oiseau de proie nocturne. Ses grands yeux et son ouïe très fine lui "
    "permettent de chasser dans l'obscurité. Elle se nourrit principalement de petits rongeurs.",
    "Le dauphin est un mammifère marin qui respire de l'air à la surface. Il vit en groupe et "
    "communique par des sifflements et des clics. Il se nourrit de poissons et de calmars.",
    "L'escargot est un mollusque qui porte une coquille en spirale. Il avance en glissant sur "
    "un mucus qu'il produit lui-même. Il aime l'humidité et sort surtout après la pluie.",
    "Le castor est un rongeur qui vit près des rivières. Avec ses dents puissantes, il coupe des "
    "arbres pour construire des barrages et des huttes. Sa queue plate l'aide à nager.",
    "La fourmi vit dans une colonie organisée autour d'une reine. Les ouvrières transportent la "
    "nourriture et entretiennent le nid. Certaines fourmis peuvent porter plusieurs fois leur "
    "propre poids.",
    "Le renard roux est un mammifère omnivore. Il mange des rongeurs, des fruits et des insectes. "
    "Il vit souvent dans un terrier et s'adapte bien aux campagnes comme aux villes.",
    "La grenouille est un amphibien. Elle pond ses œufs dans l'eau, et les têtards qui en sortent "
    "respirent avec des branchies avant de se transformer en adultes.",
    "Le manchot est un oiseau qui ne vole pas mais nage très bien. Il vit surtout dans "
    "l'hémisphère sud. Ses ailes lui servent de nageoires pour chasser les poissons.",
    "L'écureuil roux vit dans les arbres. En automne, il cache des noisettes et des graines pour "
    "l'hiver. Il oublie une partie de ses cachettes, ce qui aide de nouveaux arbres à pousser.",
    "La baleine bleue est le plus grand animal connu. Elle se nourrit de krill, de minuscules "
    "crustacés qu'elle filtre grâce à ses fanons. Son chant peut porter très loin sous l'eau.",
]

FR_SCIENCE = [
    "Le cycle de l'eau décrit le voyage permanent de l'eau sur la Terre. Chauffée par le soleil, "
    "l'eau des mers s'évapore. La vapeur se refroidit en altitude et forme des nuages. L'eau "
    "retombe ensuite sous forme de pluie ou de neige, puis rejoint les rivières et la mer.",
    "La photosynthèse est le moyen par lequel les plantes fabriquent leur nourriture. Grâce à la "
    "lumière du soleil, les feuilles transforment l'eau et le dioxyde de carbone en sucres. Elles "
    "rejettent de l'oxygène dans l'air.",
    "Les saisons existent parce que l'axe de la Terre est incliné. Pendant l'été d'un "
    "hémisphère, les rayons du soleil y arrivent plus directement et les journées sont plus "
    "longues. Six mois plus tard, la situation s'inverse.",
    "Le son est une vibration qui se propage dans l'air, l'eau ou les solides. Il ne peut pas "
    "voyager dans le vide. Dans l'air, il parcourt environ trois cent quarante mètres par seconde.",
    "La matière peut être solide, liquide ou gazeuse. En chauffant la glace, on obtient de l'eau "
    "liquide, puis de la vapeur. En refroidissant la vapeur, on revient à l'eau liquide : c'est "
    "la condensation.",
    "Un arc-en-ciel apparaît quand la lumière du soleil traverse des gouttes de pluie. Chaque "
    "goutte sépare la lumière blanche en plusieurs couleurs, du rouge au violet.",
    "La Lune ne produit pas de lumière : elle renvoie celle du soleil. Selon sa position autour "
    "de la Terre, nous voyons une partie plus ou moins grande de sa face éclairée. Ce sont les "
    "phases de la Lune.",
    "Un aimant attire le fer, le nickel et le cobalt. Il possède un pôle nord et un pôle sud. "
    "Deux pôles identiques se repoussent, alors que deux pôles opposés s'attirent.",
]


def build_corpus_fr(rng: random.Random) -> str:
    used: set[str] = set()
    docs = [fr_town(rng, used) for _ in range(34)]
    for _ in range(2):
        for recipe, minutes in zip(FR_RECIPES, RECIPE_MINUTES):
            docs.append(fr_recipe(rng, recipe, minutes))
    docs += [fr_weather(rng) for _ in range(26)]
    docs += [fr_tale(rng) for _ in range(22)]
    docs += FR_ANIMALS + FR_SCIENCE
    rng.shuffle(docs)
    return "\n\n".join(docs) + "\n"


# ---------------------------------------------------------------------------
# English corpus
# ---------------------------------------------------------------------------

EN_TOWN_START = ["Ash", "Brook", "Elm", "Fair", "Glen", "Hart", "Kings", "Long", "Mill", "North",
                 "Oak", "Red", "Stone", "Thorn", "West", "Wil", "Bright", "Cold", "Deep", "Green"]
EN_TOWN_END = ["ford", "bury", "ton", "field", "wick", "dale", "ham", "moor", "bridge", "stead",
               "hollow", "cliff", "mouth", "worth", "by", "port"]
EN_RIVERS = ["the Wend", "the Arle", "the Tamsey", "the Colne", "the Brisk", "the Ouse", "the Lidd",
             "the Marrow"]
EN_SETTINGS = [
    "on the banks of {river}", "at the foot of a chalk ridge", "on a rocky stretch of coast",
    "in a wooded valley", "in the middle of a wide farming plain", "where two small rivers meet",
    "on a windswept upland", "at the edge of an old forest", "beside a long lake",
    "along a disused canal",
]
EN_ECONOMY = [
    "dairy farming and sheep", "fishing and the oyster trade", "furniture making",
    "walking holidays and tourism", "orchards and cider presses", "a small brewery",
    "a paper mill that opened in the last century", "pottery and leather workshops",
    "wheat and barley farming", "a busy marina", "weaving and wool",
]
EN_MONUMENTS = [("a Norman church", "built in the {c} century"),
                ("a ruined castle", "raised in the {c} century"),
                ("a stone bridge", "built in the {c} century"),
                ("a water mill", "restored in the {c} century"),
                ("a covered market hall", "built in the {c} century"),
                ("a lighthouse", "first lit in the {c} century"),
                ("an abbey", "founded in the {c} century"),
                ("a watchtower", "built in the {c} century")]
EN_CENTURIES = ["eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
                "seventeenth", "eighteenth", "nineteenth"]
EN_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
EN_GOODS = ["fruit and vegetables", "goat's cheese", "fresh fish", "honey and jam",
            "flowers and seedlings", "country bread"]
EN_SPECIALITIES = [("a pork pie", "pickled onions"), ("an apple cake", "thick cream"),
                   ("a fish stew", "crusty bread"), ("a lentil broth", "rye bread"),
                   ("a plum tart", "custard"), ("a sharp cheddar", "oatcakes"),
                   ("honey pancakes", "fresh berries"), ("a mutton pie", "mashed swede")]
EN_CLIMATES = ["mild and damp, with few hard frosts", "warm in summer and cold in winter",
               "windy, especially in spring", "sunny, with little summer rain",
               "cool, because the town stands high above the sea", "changeable, with frequent showers"]
EN_EVENTS = ["a music festival that lasts three days", "a boat race on the river",
             "an old book fair", "a storytelling festival for children", "a harvest fair",
             "a baking contest", "a lantern parade", "a night of stargazing"]
EN_SEASONS = ["in spring", "in summer", "in autumn", "in winter", "in early summer", "in late autumn"]


def en_town(rng: random.Random, used: set[str]) -> str:
    name = _town_name(rng, EN_TOWN_START, EN_TOWN_END, used)
    setting = rng.choice(EN_SETTINGS).format(river=rng.choice(EN_RIVERS))
    monument, built = rng.choice(EN_MONUMENTS)
    dish, side = rng.choice(EN_SPECIALITIES)
    pop = rng.choice([800, 1200, 1500, 2300, 3400, 4800, 6100, 8500, 12000, 15500, 21000])
    sentences = [
        f"{name} is a small town {setting}.",
        f"It has about {pop} inhabitants.",
        f"Its economy relies mostly on {rng.choice(EN_ECONOMY)}.",
        f"In the centre stands {monument}, {built.format(c=rng.choice(EN_CENTURIES))}.",
        f"Every {rng.choice(EN_DAYS)}, the market in the main square sells {rng.choice(EN_GOODS)}.",
        f"The local speciality is {dish}, served with {side}.",
        f"The climate is {rng.choice(EN_CLIMATES)}.",
        f"{_cap(rng.choice(EN_SEASONS))}, the town holds {rng.choice(EN_EVENTS)}.",
    ]
    first, rest = sentences[:2], sentences[2:]
    rng.shuffle(rest)
    return " ".join(first + rest[: rng.randint(3, 6)])


EN_RECIPES = [
    ("leek soup", ["leeks", "potatoes", "an onion", "butter"],
     ["slice the leeks and the onion", "soften them in the butter",
      "add the diced potatoes and cover with water", "blend the soup"], "hot"),
    ("an apple tart", ["shortcrust pastry", "apples", "sugar", "cinnamon"],
     ["line a tin with the pastry", "peel the apples and cut them into thin slices",
      "arrange the slices in a circle", "sprinkle with sugar and cinnamon"], "warm"),
    ("a courgette gratin", ["courgettes", "cream", "grated cheese", "garlic"],
     ["cut the courgettes into rounds", "rub the dish with garlic",
      "layer the courgettes with the cream", "cover with grated cheese"], "hot"),
    ("a herb omelette", ["eggs", "parsley", "chives", "butter"],
     ["beat the eggs with a pinch of salt", "chop the herbs finely", "melt the butter in a pan",
      "pour in the eggs and add the herbs"], "hot"),
    ("a lentil salad", ["green lentils", "a shallot", "vinegar", "oil"],
     ["rinse the lentils", "cook them in unsalted water", "whisk the oil and the vinegar",
      "add the chopped shallot"], "cold"),
    ("rice pudding", ["pudding rice", "milk", "sugar", "a vanilla pod"],
     ["warm the milk with the vanilla", "stir in the rice", "stir often so that it does not stick",
      "add the sugar at the end"], "cold"),
    ("pancakes", ["flour", "eggs", "milk", "a pinch of salt"],
     ["mix the flour and the salt", "add the eggs one at a time",
      "pour in the milk little by little while whisking", "let the batter rest for an hour"], "hot"),
    ("a vegetable stew", ["tomatoes", "aubergines", "peppers", "courgettes"],
     ["cut all the vegetables into cubes", "fry the aubergines in oil",
      "add the peppers and the courgettes", "finish with the tomatoes and some thyme"], "hot"),
    ("French toast", ["stale bread", "milk", "eggs", "sugar"],
     ["cut the bread into thick slices", "beat the eggs with the milk and the sugar",
      "dip each slice into the mixture", "fry the slices until golden"], "warm"),
    ("carrot mash", ["carrots", "butter", "milk", "nutmeg"],
     ["peel the carrots", "boil them until tender", "mash them with the butter and the milk",
      "add a little nutmeg"], "hot"),
    ("pear compote", ["pears", "a little water", "sugar", "a lemon"],
     ["peel and core the pears", "cut them into pieces", "cook them with the water and the sugar",
      "add the lemon juice"], "cold"),
    ("pumpkin soup", ["pumpkin", "an onion", "stock", "cream"],
     ["cut the pumpkin into large cubes", "fry the onion", "add the pumpkin and the stock",
      "blend and stir in the cream"], "hot"),
]
EN_RECIPE_OPEN = [
    "To make {dish} for {n} people, you need {ing}.",
    "Here is how to make {dish} for {n} people. You will need {ing}.",
    "{Dish} is a simple dish made with {ing}. This recipe serves {n}.",
]
EN_RECIPE_CLOSE = ["Cook for {t} minutes over a {heat} heat.",
                   "Allow about {t} minutes of cooking over a {heat} heat.",
                   "It takes roughly {t} minutes over a {heat} heat."]
EN_SERVE = ["Serve {temp}.", "This dish is best eaten {temp}.", "Bring it to the table {temp}."]


def _en_join(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def en_recipe(rng: random.Random, recipe, minutes: int) -> str:
    dish, ingredients, steps, temp = recipe
    ing = list(ingredients)
    rng.shuffle(ing)
    n = rng.choice([2, 4, 6])
    parts = [rng.choice(EN_RECIPE_OPEN).format(dish=dish, Dish=_cap(dish), n=n, ing=_en_join(ing))]
    for i, step in enumerate(steps):
        if i == 0:
            parts.append(f"First, {step}.")
        elif i < len(steps) - 1:
            parts.append(f"{rng.choice(['Then', 'Next', 'After that'])}, {step}.")
        else:
            parts.append(f"Finally, {step}.")
    t, heat = _cooking(rng, minutes, ["low", "medium", "high"])
    parts.append(rng.choice(EN_RECIPE_CLOSE).format(t=t, heat=heat))
    parts.append(rng.choice(EN_SERVE).format(temp=temp))
    return " ".join(parts)


EN_REGIONS = ["the north coast", "the eastern valleys", "the central uplands", "the south coast",
              "the western hills", "the great plain", "the river basin", "the islands"]
EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December"]
EN_SKIES = ["clear", "hazy", "overcast", "cloudy", "grey and low", "bright"]
EN_AFTERNOON = ["showers will break out late in the day", "the sun will return almost everywhere",
                "a few thunderstorms may rumble over the hills", "a light rain will fall all afternoon",
                "the clouds will slowly clear", "fog will linger in the valleys",
                "snow may fall above a thousand metres"]
EN_WIND = ["light", "moderate", "strong", "gusty"]
EN_DIRS = ["north", "south", "west", "north-west", "south-east", "north-east"]
EN_ADVICE = ["Take an umbrella.", "A good day for a bike ride.", "Take care on slippery roads.",
             "Gardeners may water in the evening.", "Wrap up warmly in the morning.",
             "Avoid hard exercise in the hottest hours.", "Sailors are advised to stay in port."]


def en_weather(rng: random.Random) -> str:
    month = rng.randrange(12)
    base = [2, 4, 8, 11, 15, 19, 22, 22, 18, 13, 7, 3][month]
    lo = base + rng.randint(-4, 2)
    hi = lo + rng.randint(4, 11)
    return " ".join([
        f"Weather forecast for {rng.choice(EN_REGIONS)}, {rng.choice(EN_DAYS)} "
        f"{rng.randint(1, 28)} {EN_MONTHS[month]}.",
        f"In the morning the sky will be {rng.choice(EN_SKIES)} and temperatures will range from "
        f"{lo} to {hi} degrees.",
        f"In the afternoon, {rng.choice(EN_AFTERNOON)}.",
        f"The wind will be {rng.choice(EN_WIND)}, from the {rng.choice(EN_DIRS)}.",
        rng.choice(EN_ADVICE),
    ])


# (hero, subject pronoun, object pronoun)
EN_HEROES = [("a young miller", "she", "her"), ("an old fisherman", "he", "him"),
             ("a little vixen", "she", "her"), ("a curious shepherd", "he", "him"),
             ("a clever clockmaker", "she", "her"), ("a dreamy baker", "he", "him"),
             ("a stubborn princess", "she", "her"), ("a brave hedgehog", "he", "him"),
             ("a patient weaver", "she", "her"), ("a sailor without a boat", "he", "him")]
EN_HOMES = ["beside a pond", "deep in a forest", "at the top of a tower", "in a mountain village",
            "near an old bridge", "on a tiny island"]
EN_HABITS = ["counted the clouds", "greeted the sun", "fetched water from the spring",
             "mended the nets", "sang to the birds", "tidied the tools with care"]
EN_TROUBLES = ["the river stopped flowing", "the wind blew away every lantern in the village",
               "a thick fog covered the valley", "the bell in the tower fell silent",
               "the bees left their hives", "a star fell into the garden"]
EN_MEETS = ["a wise owl", "a shy giant", "an old tortoise", "a wolf who had lost its voice",
            "a child who talked to stones", "a chattering crow"]
EN_GIFTS = ["a silver key", "a map drawn on a leaf", "a glowing seed", "a wooden whistle",
            "a thread that never broke", "a forgotten song"]
EN_ENDINGS = ["the valley has never lacked anything", "people tell this story to their children "
              "every winter", "they say that patience beats strength",
              "the whole village celebrates that day each spring", "nobody has forgotten that journey"]


def en_tale(rng: random.Random) -> str:
    hero, pron, obj = rng.choice(EN_HEROES)
    days = rng.choice(["three days", "seven days", "a week", "a month", "two nights"])
    return " ".join([
        f"Once upon a time there was {hero} who lived {rng.choice(EN_HOMES)}.",
        f"Every morning, {pron} {rng.choice(EN_HABITS)}.",
        f"One day, {rng.choice(EN_TROUBLES)}.",
        f"{_cap(pron)} decided to set out and find out why.",
        f"After {days} on the road, {pron} met {rng.choice(EN_MEETS)}, who gave {obj} "
        f"{rng.choice(EN_GIFTS)}.",
        f"With this gift, {pron} mended what was broken and went back home.",
        f"Since that day, {rng.choice(EN_ENDINGS)}.",
    ])


EN_ANIMALS = [
    "The hedgehog is a small mammal whose back is covered in spines. It eats mostly insects, "
    "worms and slugs. It comes out at night to look for food and spends the winter hibernating "
    "in a nest of leaves.",
    "The honey bee lives in a colony inside a hive. Worker bees collect nectar and pollen from "
    "flowers and make honey. By flying from flower to flower, they help to pollinate many plants.",
    "The owl is a bird of prey that hunts at night. Its large eyes and very sharp hearing let it "
    "find food in the dark. It feeds mainly on small rodents.",
    "The dolphin is a marine mammal that breathes air at the surface. It lives in groups and "
    "communicates with whistles and clicks. It eats fish and squid.",
    "The snail is a mollusc that carries a spiral shell. It moves by gliding on a slime that it "
    "makes itself. It likes damp places and comes out mostly after rain.",
    "The beaver is a rodent that lives near rivers. With its strong teeth it cuts down trees to "
    "build dams and lodges. Its flat tail helps it to swim.",
    "An ant lives in a colony built around a queen. Workers carry food and look after the nest. "
    "Some ants can carry several times their own weight.",
    "The red fox is an omnivorous mammal. It eats rodents, fruit and insects. It often lives in a "
    "burrow and does well both in the countryside and in towns.",
    "The frog is an amphibian. It lays its eggs in water, and the tadpoles that hatch breathe "
    "with gills before they turn into adults.",
    "The penguin is a bird that cannot fly but swims very well. Most penguins live in the "
    "southern hemisphere. Their wings work as flippers when they chase fish.",
    "The red squirrel lives in trees. In autumn it hides hazelnuts and seeds for the winter. It "
    "forgets some of its hiding places, which helps new trees to grow.",
    "The blue whale is the largest animal known. It feeds on krill, tiny crustaceans that it "
    "filters through its baleen plates. Its song can travel very far under water.",
]

EN_SCIENCE = [
    "The water cycle describes the endless journey of water on Earth. Warmed by the sun, water "
    "from the seas evaporates. The vapour cools high in the air and forms clouds. The water then "
    "falls again as rain or snow and flows back to the rivers and the sea.",
    "Photosynthesis is how plants make their food. Using sunlight, leaves turn water and carbon "
    "dioxide into sugars. They release oxygen into the air.",
    "We have seasons because the Earth's axis is tilted. During one hemisphere's summer, sunlight "
    "strikes it more directly and the days are longer. Six months later the situation is reversed.",
    "Sound is a vibration that travels through air, water or solids. It cannot travel through a "
    "vacuum. In air it covers about three hundred and forty metres every second.",
    "Matter can be solid, liquid or gas. Heating ice gives liquid water and then steam. Cooling "
    "steam turns it back into liquid water: this is condensation.",
    "A rainbow appears when sunlight passes through raindrops. Each drop splits white light into "
    "several colours, from red to violet.",
    "The Moon gives off no light of its own: it reflects sunlight. Depending on where it is "
    "around the Earth, we see more or less of its lit side. These are the phases of the Moon.",
    "A magnet attracts iron, nickel and cobalt. It has a north pole and a south pole. Two like "
    "poles push each other away, while opposite poles attract.",
]


def build_corpus_en(rng: random.Random) -> str:
    used: set[str] = set()
    docs = [en_town(rng, used) for _ in range(36)]
    for _ in range(2):
        for recipe, minutes in zip(EN_RECIPES, RECIPE_MINUTES):
            docs.append(en_recipe(rng, recipe, minutes))
    docs += [en_weather(rng) for _ in range(28)]
    docs += [en_tale(rng) for _ in range(24)]
    docs += EN_ANIMALS + EN_SCIENCE
    rng.shuffle(docs)
    return "\n\n".join(docs) + "\n"


# ---------------------------------------------------------------------------
# Instructions (Alpaca style), answers computed so that they are correct
# ---------------------------------------------------------------------------

EN_PLURALS = [("cat", "cats"), ("box", "boxes"), ("city", "cities"), ("child", "children"),
              ("mouse", "mice"), ("leaf", "leaves"), ("tooth", "teeth"), ("bus", "buses"),
              ("baby", "babies"), ("knife", "knives"), ("woman", "women"), ("tomato", "tomatoes"),
              ("sheep", "sheep"), ("day", "days"), ("foot", "feet"), ("glass", "glasses")]
FR_PLURALS = [("chat", "chats"), ("cheval", "chevaux"), ("journal", "journaux"), ("œil", "yeux"),
              ("bijou", "bijoux"), ("jeu", "jeux"), ("nez", "nez"), ("travail", "travaux"),
              ("gâteau", "gâteaux"), ("bateau", "bateaux"), ("festival", "festivals"),
              ("pneu", "pneus"), ("prix", "prix"), ("trou", "trous"), ("animal", "animaux"),
              ("fleur", "fleurs")]
# (French with article, English with article)
FR_EN_WORDS = [("le chat", "the cat"), ("la maison", "the house"), ("le pain", "the bread"),
               ("la pomme", "the apple"), ("le livre", "the book"), ("la voiture", "the car"),
               ("l'arbre", "the tree"), ("la lune", "the moon"), ("le chien", "the dog"),
               ("l'eau", "the water"), ("le soleil", "the sun"), ("la fenêtre", "the window"),
               ("le fromage", "the cheese"), ("la mer", "the sea"), ("l'oiseau", "the bird"),
               ("la clé", "the key")]
EN_CATEGORIES = {"fruit": ["banana", "cherry", "pear", "apricot", "grape", "plum"],
                 "animal": ["horse", "rabbit", "eagle", "salmon", "goat", "fox"],
                 "colour": ["green", "yellow", "purple", "orange", "grey", "brown"]}
FR_CATEGORIES = {"fruit": ["banane", "cerise", "poire", "abricot", "raisin", "prune"],
                 "animal": ["cheval", "lapin", "aigle", "saumon", "chèvre", "renard"],
                 "couleur": ["vert", "jaune", "violet", "bleu", "gris", "rouge"]}
EN_OPPOSITES = [("hot", "cold"), ("tall", "short"), ("fast", "slow"), ("open", "closed"),
                ("early", "late"), ("full", "empty"), ("light", "dark"), ("happy", "sad"),
                ("heavy", "light"), ("strong", "weak")]
FR_OPPOSITES = [("chaud", "froid"), ("grand", "petit"), ("rapide", "lent"), ("ouvert", "fermé"),
                ("tôt", "tard"), ("plein", "vide"), ("clair", "sombre"), ("joyeux", "triste"),
                ("lourd", "léger"), ("fort", "faible")]
EN_CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
               ("Germany", "Berlin"), ("Portugal", "Lisbon"), ("Canada", "Ottawa"),
               ("Egypt", "Cairo"), ("Norway", "Oslo"), ("Kenya", "Nairobi")]
FR_CAPITALS = [("de la France", "Paris"), ("de l'Italie", "Rome"), ("de l'Espagne", "Madrid"),
               ("du Japon", "Tokyo"), ("de l'Allemagne", "Berlin"), ("du Portugal", "Lisbonne"),
               ("du Canada", "Ottawa"), ("de l'Égypte", "Le Caire"), ("de la Norvège", "Oslo"),
               ("du Kenya", "Nairobi")]
EN_DEFINITIONS = [
    ("thermometer", "A thermometer is an instrument that measures temperature."),
    ("library", "A library is a place where books are kept so that people can read or borrow them."),
    ("volcano", "A volcano is an opening in the Earth's crust through which lava, ash and gas escape."),
    ("recipe", "A recipe is a set of instructions for preparing a dish."),
    ("island", "An island is a piece of land completely surrounded by water."),
    ("calendar", "A calendar is a table that shows the days, weeks and months of a year."),
    ("bridge", "A bridge is a structure built to cross a river, a road or a valley."),
    ("compass", "A compass is an instrument whose needle points north."),
    ("herbivore", "A herbivore is an animal that eats only plants."),
    ("harbour", "A harbour is a sheltered area of water where boats can stay safely."),
]
FR_DEFINITIONS = [
    ("thermomètre", "Un thermomètre est un instrument qui mesure la température."),
    ("bibliothèque", "Une bibliothèque est un lieu où l'on conserve des livres pour les lire ou "
                     "les emprunter."),
    ("volcan", "Un volcan est une ouverture de la croûte terrestre par laquelle sortent de la "
               "lave, des cendres et des gaz."),
    ("recette", "Une recette est une suite d'instructions pour préparer un plat."),
    ("île", "Une île est une étendue de terre entourée d'eau de tous côtés."),
    ("calendrier", "Un calendrier est un tableau qui présente les jours, les semaines et les mois "
                   "d'une année."),
    ("pont", "Un pont est un ouvrage construit pour franchir une rivière, une route ou une vallée."),
    ("boussole", "Une boussole est un instrument dont l'aiguille indique le nord."),
    ("herbivore", "Un herbivore est un animal qui ne mange que des plantes."),
    ("port", "Un port est un abri au bord de l'eau où les bateaux peuvent stationner en sécurité."),
]
FR_SENTENCE_PLURALS = [
    ("Le chat dort sur le canapé.", "Les chats dorment sur les canapés."),
    ("L'enfant joue dans le jardin.", "Les enfants jouent dans les jardins."),
    ("Le cheval mange de l'herbe.", "Les chevaux mangent de l'herbe."),
    ("La fleur est rouge.", "Les fleurs sont rouges."),
    ("Mon ami lit un journal.", "Mes amis lisent des journaux."),
    ("Le bateau quitte le port.", "Les bateaux quittent le port."),
    ("Cette pomme est mûre.", "Ces pommes sont mûres."),
    ("L'oiseau chante le matin.", "Les oiseaux chantent le matin."),
]
EN_SENTENCE_PLURALS = [
    ("The cat sleeps on the sofa.", "The cats sleep on the sofa."),
    ("The child plays in the garden.", "The children play in the garden."),
    ("The horse eats grass.", "The horses eat grass."),
    ("The flower is red.", "The flowers are red."),
    ("My friend reads a newspaper.", "My friends read newspapers."),
    ("This apple is ripe.", "These apples are ripe."),
    ("The bird sings in the morning.", "The birds sing in the morning."),
    ("The box is heavy.", "The boxes are heavy."),
]
EN_SENTENCES = ["the train leaves at noon", "we planted three trees in the park",
                "my sister plays the violin", "the museum opens on sunday",
                "rain is expected tomorrow", "the cake needs forty minutes in the oven"]
FR_SENTENCES = ["le train part à midi", "nous avons planté trois arbres dans le parc",
                "ma sœur joue du violon", "le musée ouvre le dimanche",
                "de la pluie est prévue demain", "le gâteau cuit quarante minutes au four"]


def _add_en(rng: random.Random, out: list[dict], seen: set) -> None:
    def add(instruction: str, inp: str, output: str) -> None:
        key = (instruction, inp)
        if key not in seen:
            seen.add(key)
            out.append({"instruction": instruction, "input": inp, "output": output})

    for _ in range(8):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        add(f"What is {a} + {b}?", "", f"{a} + {b} = {a + b}.")
    for _ in range(6):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        add("Multiply the two numbers.", f"{a} and {b}", f"{a} × {b} = {a * b}.")
    for _ in range(4):
        a, b = rng.randint(50, 200), rng.randint(1, 49)
        add(f"Subtract {b} from {a}.", "", f"{a} - {b} = {a - b}.")
    units = [("kilometres", "metres", 1000), ("hours", "minutes", 60), ("kilograms", "grams", 1000),
             ("metres", "centimetres", 100), ("minutes", "seconds", 60), ("litres", "millilitres", 1000)]
    for _ in range(10):
        src, dst, k = rng.choice(units)
        n = rng.randint(2, 25)
        add(f"Convert {n} {src} to {dst}.", "", f"{n} {src} is {n * k} {dst}.")
    for sing, plur in rng.sample(EN_PLURALS, 10):
        add("Write the plural of this noun.", sing, plur)
    for fr, en in rng.sample(FR_EN_WORDS, 10):
        add("Translate into French.", en, fr)
    for word, definition in EN_DEFINITIONS[:8]:
        add("Give a short definition of the word.", word, definition)
    cats = [(w, c) for c, ws in EN_CATEGORIES.items() for w in ws]
    for word, cat in rng.sample(cats, 8):
        add("Is this word a fruit, an animal or a colour?", word, f"{_cap(word)} is {'an' if cat[0] in 'aeiou' else 'a'} {cat}.")
    for word, opp in rng.sample(EN_OPPOSITES, 7):
        add("Give the opposite of this word.", word, opp)
    for country, capital in rng.sample(EN_CAPITALS, 7):
        add(f"What is the capital of {country}?", "", f"The capital of {country} is {capital}.")
    for sent, plural in rng.sample(EN_SENTENCE_PLURALS, 6):
        add("Rewrite the sentence in the plural.", sent, plural)
    for sent in EN_SENTENCES[:4]:
        add("Rewrite the sentence in capital letters.", sent, sent.upper())
    for _ in range(6):
        nums = rng.sample(range(1, 100), rng.randint(4, 6))
        add("Sort these numbers from smallest to largest.", ", ".join(map(str, nums)),
            ", ".join(map(str, sorted(nums))))
    for _ in range(6):
        n = rng.randint(10, 999)
        add(f"Is {n} even or odd?", "", f"{n} is {'even' if n % 2 == 0 else 'odd'}.")


def _add_fr(rng: random.Random, out: list[dict], seen: set) -> None:
    def add(instruction: str, inp: str, output: str) -> None:
        key = (instruction, inp)
        if key not in seen:
            seen.add(key)
            out.append({"instruction": instruction, "input": inp, "output": output})

    for _ in range(8):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        add(f"Combien font {a} + {b} ?", "", f"{a} + {b} = {a + b}.")
    for _ in range(6):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        add("Multiplie les deux nombres.", f"{a} et {b}", f"{a} × {b} = {a * b}.")
    for _ in range(4):
        a, b = rng.randint(50, 200), rng.randint(1, 49)
        add(f"Soustrais {b} de {a}.", "", f"{a} - {b} = {a - b}.")
    units = [("kilomètres", "mètres", 1000), ("heures", "minutes", 60), ("kilogrammes", "grammes", 1000),
             ("mètres", "centimètres", 100), ("minutes", "secondes", 60), ("litres", "millilitres", 1000)]
    for _ in range(10):
        src, dst, k = rng.choice(units)
        n = rng.randint(2, 25)
        add(f"Convertis {n} {src} en {dst}.", "", f"{n} {src} font {n * k} {dst}.")
    for sing, plur in rng.sample(FR_PLURALS, 10):
        add("Écris le pluriel de ce nom.", sing, plur)
    for fr, en in rng.sample(FR_EN_WORDS, 10):
        add("Traduis en anglais.", fr, en)
    for word, definition in FR_DEFINITIONS[:8]:
        add("Donne une courte définition du mot.", word, definition)
    cats = [(w, c) for c, ws in FR_CATEGORIES.items() for w in ws]
    for word, cat in rng.sample(cats, 8):
        article = {"fruit": "un fruit", "animal": "un animal", "couleur": "une couleur"}[cat]
        add("Ce mot désigne-t-il un fruit, un animal ou une couleur ?", word,
            f"{_cap(word)} est {article}.")
    for word, opp in rng.sample(FR_OPPOSITES, 7):
        add("Donne le contraire de ce mot.", word, opp)
    for country, capital in rng.sample(FR_CAPITALS, 7):
        add(f"Quelle est la capitale {country} ?", "", f"La capitale {country} est {capital}.")
    for sent, plural in rng.sample(FR_SENTENCE_PLURALS, 6):
        add("Mets la phrase au pluriel.", sent, plural)
    for sent in FR_SENTENCES[:4]:
        add("Réécris la phrase en majuscules.", sent, sent.upper())
    for _ in range(6):
        nums = rng.sample(range(1, 100), rng.randint(4, 6))
        add("Range ces nombres du plus petit au plus grand.", ", ".join(map(str, nums)),
            ", ".join(map(str, sorted(nums))))
    for _ in range(6):
        n = rng.randint(10, 999)
        add(f"Le nombre {n} est-il pair ou impair ?", "", f"{n} est {'pair' if n % 2 == 0 else 'impair'}.")


def build_instructions(rng: random.Random) -> list[dict]:
    out: list[dict] = []
    seen: set = set()
    _add_en(rng, out, seen)
    _add_fr(rng, out, seen)
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------
# French IT-support tickets
# ---------------------------------------------------------------------------

TK_APPS = ["Outlook", "Teams", "Excel", "le logiciel de paie", "l'ERP", "Word", "le navigateur",
           "l'antivirus", "le logiciel de comptabilité", "Acrobat Reader", "le client Zoom"]
TK_SHARES = ["Compta", "RH", "Projets", "Commun", "Direction", "Ventes"]
TK_NAMES = ["Julie Martin", "Karim Benali", "Sophie Leroy", "Thomas Petit", "Inès Moreau",
            "Lucas Girard", "Chloé Fabre", "Mehdi Roussel"]
TK_FLOORS = ["premier", "deuxième", "troisième", "quatrième"]
TK_PRINTERS = ["HP du couloir", "Canon de l'accueil", "Ricoh du service RH", "Brother de la compta",
               "Xerox du deuxième", "Epson du labo"]

TK_PROBLEMS = {
    "reseau": [
        "le wifi se coupe toutes les {n} minutes", "je n'ai plus accès à internet sur mon poste",
        "le VPN refuse de se connecter quand je travaille de chez moi",
        "la connexion est très lente dans la salle de réunion {room}",
        "la prise réseau de mon bureau ne fonctionne plus",
        "je n'arrive plus à joindre le serveur de fichiers",
        "les pages web mettent plusieurs minutes à s'afficher",
        "mon ordinateur n'obtient pas d'adresse IP",
        "la borne wifi du {floor} étage clignote en orange",
        "le réseau invité ne s'affiche plus dans la liste des connexions",
        "je perds la connexion dès que je branche le câble ethernet",
        "la visioconférence coupe sans arrêt à cause du débit",
    ],
    "materiel": [
        "l'écran de mon portable reste noir au démarrage",
        "plusieurs touches du clavier ne répondent plus",
        "la souris sans fil ne marche plus malgré des piles neuves",
        "le ventilateur de mon ordinateur fait un bruit très fort",
        "la batterie de mon portable ne tient plus que {n} minutes",
        "le second écran n'est plus détecté", "mon poste s'éteint tout seul quand il chauffe",
        "la station d'accueil ne recharge plus le portable",
        "le disque dur fait des cliquetis inquiétants",
        "la webcam intégrée ne s'allume pas", "!le chargeur de mon portable est cassé",
        "l'écran tactile de la tablette ne réagit plus",
    ],
    "logiciel": [
        "{app} plante dès l'ouverture", "{app} affiche un message d'erreur au démarrage",
        "la mise à jour de {app} échoue à chaque fois",
        "!j'ai besoin qu'on installe {app} sur mon poste",
        "!{app} est devenu très lent depuis la dernière mise à jour",
        "{app} se ferme quand j'ouvre un gros fichier", "la licence de {app} a expiré",
        "mes macros ne fonctionnent plus dans {app}",
        "{app} ne retrouve plus mes modèles de documents",
        "{app} reste figé sur l'écran de chargement",
        "une fenêtre d'erreur s'ouvre à chaque lancement de {app}",
    ],
    "compte_acces": [
        "mon mot de passe a expiré et je ne peux plus ouvrir ma session",
        "mon compte est verrouillé après trop de tentatives",
        "je n'ai pas les droits sur le dossier partagé {share}",
        "!il faut créer un compte pour une nouvelle personne, {name}",
        "je ne reçois plus le code de double authentification",
        "!je voudrais réinitialiser mon mot de passe",
        "mes droits d'accès à {app} ont disparu",
        "l'identifiant de {name} n'est pas reconnu",
        "je n'arrive plus à me connecter à ma messagerie avec mon identifiant",
        "!le compte de {name} doit être désactivé après son départ",
        "!j'ai besoin d'un accès en lecture au dossier {share}",
    ],
    "impression": [
        "l'imprimante du {floor} étage indique un bourrage papier",
        "mes documents restent bloqués dans la file d'impression",
        "l'imprimante sort des pages blanches", "le toner de l'imprimante {printer} est vide",
        "le scanner n'envoie plus les numérisations par courriel",
        "impossible d'ajouter l'imprimante {printer} sur mon poste",
        "les impressions en couleur sortent avec des traînées",
        "l'imprimante n'imprime plus en recto verso",
        "le photocopieur me demande un code que je n'ai pas",
        "l'imprimante {printer} est hors ligne", "les étiquettes s'impriment décalées",
    ],
}
# templates starting with "!" never get a "depuis ..." clause
TK_OPEN = ["Bonjour,", "Bonjour à tous,", "Salut,", "", "", "Bonjour l'équipe support,", "Urgent :",
           "Hello,"]
TK_SINCE = ["depuis ce matin", "depuis hier soir", "depuis la mise à jour de lundi",
            "depuis mon retour de congés", "depuis le déménagement du service", "", "", ""]
TK_IMPACT = ["Je ne peux plus travailler.", "C'est bloquant pour toute l'équipe.",
             "Ce n'est pas urgent mais c'est gênant.", "J'ai une réunion importante cet après-midi.",
             "Plusieurs collègues ont le même souci.", "", ""]
TK_CLOSE = ["Merci d'avance.", "Cordialement.", "Pouvez-vous m'aider ?", "Merci !", "", "Bonne journée."]
TK_CLASSES = ["reseau", "materiel", "logiciel", "compte_acces", "impression"]


def _ticket(rng: random.Random, label: str) -> str:
    template = rng.choice(TK_PROBLEMS[label])
    no_since = template.startswith("!")
    problem = template.lstrip("!").format(
        n=rng.choice([5, 10, 15, 20, 30]), room=rng.choice(["A", "B", "C", "Jupiter", "Mercure"]),
        floor=rng.choice(TK_FLOORS), app=rng.choice(TK_APPS), share=rng.choice(TK_SHARES),
        name=rng.choice(TK_NAMES), printer=rng.choice(TK_PRINTERS))
    since = "" if no_since else rng.choice(TK_SINCE)
    body = problem + (f" {since}" if since else "") + "."
    opener = rng.choice(TK_OPEN)
    parts = [opener, body if opener else _cap(body), rng.choice(TK_IMPACT), rng.choice(TK_CLOSE)]
    return " ".join(p for p in parts if p)


def build_tickets(rng: random.Random, per_class: int = 60) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for label in TK_CLASSES:
        made = 0
        while made < per_class:
            text = _ticket(rng, label)
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
                made += 1
    rng.shuffle(rows)
    return rows


# ---------------------------------------------------------------------------
# assembling the files
# ---------------------------------------------------------------------------


def build_all() -> dict[str, str]:
    """Return ``{file name: file text}`` for every bundled dataset."""
    files: dict[str, str] = {}
    files["corpus_fr.txt"] = build_corpus_fr(random.Random(SEED + 1))
    files["corpus_en.txt"] = build_corpus_en(random.Random(SEED + 2))
    examples = build_instructions(random.Random(SEED + 3))
    files["instructions_fr_en.json"] = json.dumps(examples, ensure_ascii=False, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(build_tickets(random.Random(SEED + 4)))
    files["tickets_fr.csv"] = buf.getvalue()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the files on disk instead of writing them")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    args = parser.parse_args(argv)
    files = build_all()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out / name).is_file()
                 or (args.out / name).read_text(encoding="utf-8") != text]
        for name in stale:
            sys.stderr.write(f"{name} differs from what the script generates\n")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
