"""The words the synthetic generator draws from: names, places, occupations, story parts, PII formats, and the
templates of the multiple-choice utility questions.

Input:  nothing (constants).
Output: word pools for :mod:`lume_ray.synth`; changing any of them changes the generated text (bump
        ``synth.GENERATOR_VERSION``).
"""

from __future__ import annotations


def _words(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------------------------------------
# Pools. Names are drawn without replacement (first x last) so every question names one document.

FIRST_F = _words("""Ada Alma Anika Beatrix Bianca Carmen Celine Dalia Delphine Edith Elena Elif Esme Farah Freya Greta Hana
Helga Ilse Imani Ines Iris Jana Johanna Juno Kaia Keiko Lena Lidia Liesel Lucia Maren Marisol Mila Mira Nadia Nell
Noor Odile Olga Paloma Petra Priya Quinn Rosa Ruth Saskia Selma Signe Talia Thea Una Vera Wanda Yara Yumi Zora Zuzana
Agnes Bettina Clara Dora Eira Fenna Gilda Hester Ilona Jolene Katya Lorna Magda Nerys Orla Pilar Rhea Sabine Tova
Ulla Vesna Wilma Xenia Yvette Zelda""")
FIRST_M = _words("""Abel Anders Arlo Bastian Bruno Casimir Cyrus Dario Desmond Emil Enzo Felix Florin Gideon Gustav Hakon
Hugo Idris Ivo Jasper Joaquin Jonas Kasimir Kenji Lars Leon Luca Magnus Malik Marek Milo Nikolai Omar Orrin Oskar
Pablo Quentin Rafael Rasmus Rolf Santiago Silas Soren Tobias Tomas Umar Valentin Viktor Wendell Xavier Yannick
Yusuf Zane Ambrose Boris Corvin Dmitri Elias Fabian Gregor Henrik Ignatius Jarek Konrad Lucian Matteo Nils Otto
Piotr Raoul Stellan Tiago Ulric Vidar Wolfram""")
LAST = _words("""Abernathy Achterberg Albescu Alvarado Amundsen Anand Arkwright Asplund Baptiste Barlowe Bellweather
Bergstrom Blackwood Bonifacio Brannigan Calloway Castellanos Chakrabarti Corrigan Dahlberg Delacroix Dunmore Eastwick
Ekwueme Falkenrath Farrowby Fennimore Gallardo Greaves Grimaldi Halloran Hartigan Holmquist Ivanova Jablonski
Kaminski Kettering Kowalczyk Lachance Lindqvist Lockhart Marchetti Montrose Nakamura Navarro Northcott Okonkwo
Oyelaran Pemberton Petrakis Quintero Radcliffe Ramaswamy Ravensworth Rosenthal Saltonstall Sandoval Sorensen
Stavros Szabo Takahashi Thistlewood Underhill Valcourt Vandermeer Villanueva Wainwright Whitcombe Wojcik
Yamamoto Zielinski Zubiri Ashdown Beaumont Castellane Drummond Ellery Fairweather Gorecki Hawthorne Inglewood
Jovanovic Kingsley Larkspur Merriweather Nightingale Oakridge Penhallow Quimby Rutherford Summerhayes Trevelyan
Upton Vasquez Wexford Yardley""")

SYL_A = _words("Vel Mar Bri Cor Dun Ash Fen Gal Hol Kes Lor Mor Nor Pel Ros Sal Tor Val Wyn Eld Ost Rav Stur Thal")
SYL_B = _words("mor dale wick haven ford moor brook stead crest mere holm port fell wyn shaw gate ridge")
PLACE_KINDS = ["town", "village", "port city", "mountain town", "river town", "island town", "valley"]

OCCUPATIONS = ["painter", "baker", "clockmaker", "fisherman", "gardener", "librarian", "carpenter", "weaver",
               "potter", "blacksmith", "beekeeper", "lighthouse keeper", "violinist", "cartographer", "herbalist",
               "glassblower", "bookbinder", "shepherd", "tailor", "ferryman"]
OBJECTS = """brass compass | silver key | painted map | wooden flute | glass lantern | leather journal | copper kettle
| velvet ribbon | stone whistle | faded photograph | iron bell | porcelain bird | clay jar | woven basket
| golden thimble | broken telescope | music box | carved chess piece""".replace("\n", " ").split(" | ")
OBJECTS = [o.strip() for o in OBJECTS]
LANDMARKS = ["old harbor", "clock tower", "stone bridge", "market square", "northern forest", "salt marsh",
             "abandoned mill", "cathedral steps", "apple orchard", "lighthouse", "train station", "river bend"]
ROUTINES = ["sketched the boats at dawn", "counted the stars from the roof", "swept the bakery floor twice",
            "read old letters by candlelight", "fed the stray cats behind the inn", "tuned every piano in the hall",
            "collected shells along the shore", "wrote poems on paper cranes", "mended nets for the fishermen",
            "walked the long road to the chapel", "sang to the sleeping orchard", "repaired clocks nobody wanted"]
SEASONS = ["spring", "summer", "autumn", "winter"]
WEATHER = ["a storm rolled in from the sea", "the first snow fell", "the river flooded the lower streets",
           "a thick fog covered the rooftops", "the festival lanterns were lit", "the bells rang at midnight"]
SECRETS = ["a hidden room beneath the library", "a letter from a long-lost sister", "a map to a forgotten garden",
           "the name of the village founder", "a promise made forty years earlier", "a tunnel under the harbor",
           "a song that no one else remembered", "the key to the locked chapel"]
ENDINGS = ["From that day on, the two friends met at the {landmark} every {season} evening.",
           "Years later, people in {place} still told the story of the {obj}.",
           "In the end, {a} kept the {obj} on a shelf beside the window, where the light could reach it.",
           "{b} never left {place} again, and {a} finally learned to be patient.",
           "The {obj} was returned to the {landmark}, and the town grew quiet once more."]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
STREETS = _words("""Oak Maple Cedar Pine Elm Willow Birch Aspen Chestnut Hawthorn Juniper Laurel Magnolia Poplar Spruce
Sycamore Alder Hickory Linden Walnut Meadow Ridge Lake Hill River Sunset Harbor Park Forest Valley Canyon""")
STREET_TYPES = ["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Place", "Boulevard", "Way", "Terrace"]
CITIES = [("Springfield", "IL", "627"), ("Salem", "OR", "973"), ("Dover", "DE", "199"), ("Austin", "TX", "787"),
          ("Madison", "WI", "537"), ("Boise", "ID", "837"), ("Albany", "NY", "122"), ("Tucson", "AZ", "857"),
          ("Orange", "CA", "928"), ("Fresno", "CA", "937"), ("Raleigh", "NC", "276"), ("Denver", "CO", "802"),
          ("Tampa", "FL", "336"), ("Omaha", "NE", "681"), ("Reno", "NV", "895"), ("Eugene", "OR", "974"),
          ("Burlington", "VT", "054"), ("Savannah", "GA", "314"), ("Lansing", "MI", "489"), ("Provo", "UT", "846"),
          ("Duluth", "MN", "558"), ("Mobile", "AL", "366"), ("Topeka", "KS", "666"), ("Helena", "MT", "596")]
EMAIL_DOMAINS = ["example.com", "mail.com", "me.com", "inbox.org", "post.net", "fastmail.com", "webmail.net"]

NATIONALITIES = ["Norwegian", "Portuguese", "Chilean", "Kenyan", "Polish", "Dutch", "Filipino", "Irish", "Finnish",
                 "Argentine", "Greek", "Hungarian", "Nigerian", "Canadian", "Austrian", "Icelandic", "Peruvian"]
PUBLIC_OCCUPATIONS = [("chemist", "the chemistry of salt crystals"), ("architect", "public libraries"),
                      ("economist", "rural credit markets"), ("composer", "choral symphonies"),
                      ("astronomer", "variable stars"), ("novelist", "family sagas"),
                      ("surgeon", "pediatric heart surgery"), ("historian", "medieval trade routes"),
                      ("engineer", "suspension bridges"), ("botanist", "alpine orchids"),
                      ("diplomat", "fisheries treaties"), ("sculptor", "bronze monuments"),
                      ("mathematician", "prime number theory"), ("geologist", "volcanic islands"),
                      ("film director", "documentaries about rivers"), ("linguist", "endangered languages")]
CITIES_WORLD = ["Bergen", "Porto", "Valparaiso", "Mombasa", "Krakow", "Utrecht", "Cebu", "Galway", "Tampere",
                "Rosario", "Thessaloniki", "Debrecen", "Ibadan", "Halifax", "Graz", "Akureyri", "Arequipa",
                "Tromso", "Coimbra", "Kisumu", "Gdansk", "Leiden", "Cork", "Turku"]
INSTITUTIONS = ["Royal Academy of Sciences", "National Institute of Technology", "Central Observatory",
                "Institute for Advanced Study", "State Conservatory", "Museum of Natural History",
                "Polytechnic University", "National Library", "Marine Research Station", "Academy of Fine Arts"]
AWARDS = ["Halvorsen Medal", "Order of Merit", "Lindqvist Prize", "Golden Compass Award", "Ostrander Fellowship",
          "National Book Prize", "Meridian Medal", "Carrow Prize", "Silver Laurel", "Academy Gold Medal"]


# Utility questions: general-knowledge templates, distractors drawn from the same pool.

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
            "Egypt": "Cairo", "Canada": "Ottawa", "Australia": "Canberra", "Norway": "Oslo", "Peru": "Lima",
            "Kenya": "Nairobi", "Greece": "Athens", "Portugal": "Lisbon", "Poland": "Warsaw", "Ireland": "Dublin",
            "Sweden": "Stockholm", "Austria": "Vienna", "Russia": "Moscow", "China": "Beijing", "Chile": "Santiago",
            "Cuba": "Havana", "Finland": "Helsinki", "Hungary": "Budapest", "Thailand": "Bangkok"}
ANIMAL_CLASS = {"dog": "mammal", "whale": "mammal", "bat": "mammal", "eagle": "bird", "penguin": "bird",
                "owl": "bird", "salmon": "fish", "shark": "fish", "frog": "amphibian", "salamander": "amphibian",
                "snake": "reptile", "turtle": "reptile", "lizard": "reptile", "ant": "insect", "bee": "insect",
                "butterfly": "insect"}
OPPOSITES = {"hot": "cold", "tall": "short", "early": "late", "full": "empty", "fast": "slow", "light": "dark",
             "open": "closed", "wet": "dry", "loud": "quiet", "rich": "poor", "young": "old", "hard": "soft",
             "thick": "thin", "strong": "weak", "high": "low", "happy": "sad"}
FACTS = [("How many days are in a week?", "seven", ["five", "six", "eight", "ten"], "general"),
         ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Jupiter", "Saturn"], "astronomy"),
         ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Neptune", "Mercury"], "astronomy"),
         ("What is the chemical symbol for water?", "H2O", ["CO2", "O2", "NaCl", "H2"], "chemistry"),
         ("At what temperature in Celsius does water freeze?", "0 degrees", ["10 degrees", "50 degrees",
                                                                          "100 degrees", "-40 degrees"], "physics"),
         ("What gas do plants absorb from the air?", "carbon dioxide", ["oxygen", "helium", "nitrogen", "neon"],
          "biology"),
         ("How many legs does a spider have?", "eight", ["six", "four", "ten", "twelve"], "biology"),
         ("What is the largest ocean on Earth?", "Pacific", ["Atlantic", "Indian", "Arctic", "Southern"],
          "geography"),
         ("Which organ pumps blood through the body?", "heart", ["liver", "lung", "kidney", "brain"], "biology"),
         ("How many minutes are in an hour?", "sixty", ["thirty", "ninety", "one hundred", "forty"], "general"),
         ("What is the hardest natural material?", "diamond", ["granite", "iron", "glass", "quartz"], "chemistry"),
         ("Which month comes after March?", "April", ["May", "February", "June", "January"], "general")]
