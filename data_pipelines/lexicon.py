"""The word lists the sentence grammar and the persona cards draw from.

`Lexicon.limited(k)` keeps the first k words of every open list: that is the vocabulary knob
(smaller k = fewer distinct words, more repetition). Facts stay a fixed table of true statements.
"""

from __future__ import annotations

import dataclasses

NAMES = ("Maya", "Omar", "Lena", "Theo", "Priya", "Jonas", "Clara", "Felix", "Amara", "Hugo",
         "Nadia", "Oscar", "Ines", "Ravi", "Sofia", "Marco", "Yara", "Leo", "Elena", "Kofi",
         "Hana", "Ivan", "Zoe", "Malik", "Greta", "Tariq", "Alice", "Diego", "Nora", "Sami",
         "Rosa", "Emil", "Lucia", "Pavel", "Ada", "Bruno", "Mira", "Kenji", "Vera", "Ruben")
PLACES = ("Lisbon", "Oslo", "Cairo", "Denver", "Kyoto", "Dublin", "Nairobi", "Vienna",
          "Seattle", "Madrid", "Toronto", "Lima", "Prague", "Sydney", "Boston", "Athens",
          "Berlin", "Chicago", "Mumbai", "Quebec", "Geneva", "Havana", "Warsaw", "Austin",
          "Bristol", "Glasgow", "Helsinki", "Naples", "Porto", "Riga", "Zurich", "Accra",
          "Bergen", "Cardiff", "Dallas", "Florence", "Hamburg", "Lyon", "Milan", "Seville")
OBJECTS = ("lamp", "window", "door", "radio", "kettle", "fan", "heater", "oven", "curtain",
           "printer", "laptop", "fridge", "speaker", "camera", "drawer", "faucet", "garage",
           "blender", "mirror", "clock", "toaster", "lantern", "cabinet", "projector",
           "television", "dryer", "freezer", "gate", "shutter", "monitor")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "silver",
          "brown")
VERBS = ("open", "close", "clean", "check", "move", "fix", "lock", "unlock", "dust", "paint",
         "switch off", "switch on", "turn off", "turn on", "find")
FOODS = ("apples", "bread", "cheese", "noodles", "soup", "tea", "coffee", "rice", "pears",
         "tomatoes", "lemons", "cookies", "olives", "carrots", "honey", "pancakes", "salad",
         "oranges", "dumplings", "yogurt")
ANIMALS = ("cat", "dog", "horse", "rabbit", "parrot", "turtle", "goat", "fox", "owl", "duck",
           "sheep", "pony", "hamster", "lizard", "goose")
ADJECTIVES = ("small", "quiet", "happy", "sleepy", "clever", "hungry", "curious", "lazy",
              "brave", "noisy", "gentle", "tiny", "shy", "old", "young")
JOBS = ("baker", "nurse", "pilot", "teacher", "farmer", "painter", "chef", "librarian",
        "plumber", "dentist", "gardener", "engineer", "tailor", "carpenter", "musician",
        "journalist", "architect", "florist", "mechanic", "photographer")
LIKES = ("jazz", "tea", "chess", "hiking", "poetry", "gardening", "football", "cooking",
         "swimming", "painting", "cycling", "opera", "puzzles", "baking", "sailing", "dancing",
         "knitting", "astronomy", "fishing", "photography")
STYLES = ("cheerful", "formal", "terse", "folksy")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Short true statements (a closed table: facts are never recombined).
FACTS = ("Water boils at 100 degrees.", "A spider has 8 legs.", "The sun rises in the east.",
         "Paris is the capital of France.", "A week has 7 days.", "Ice is frozen water.",
         "Bees make honey.", "The moon orbits the earth.", "A triangle has 3 sides.",
         "Rome is in Italy.", "Owls hunt at night.", "A year has 12 months.",
         "Plants need light to grow.", "Sound travels slower than light.",
         "The Nile is a long river.", "Tokyo is the capital of Japan.",
         "A dozen means 12.", "Whales are mammals.", "Snow is cold.",
         "An hour has 60 minutes.")


@dataclasses.dataclass(frozen=True)
class Lexicon:
    names: tuple[str, ...] = NAMES
    places: tuple[str, ...] = PLACES
    objects: tuple[str, ...] = OBJECTS
    colors: tuple[str, ...] = COLORS
    verbs: tuple[str, ...] = VERBS
    foods: tuple[str, ...] = FOODS
    animals: tuple[str, ...] = ANIMALS
    adjectives: tuple[str, ...] = ADJECTIVES
    jobs: tuple[str, ...] = JOBS
    likes: tuple[str, ...] = LIKES
    styles: tuple[str, ...] = STYLES
    months: tuple[str, ...] = MONTHS
    weekdays: tuple[str, ...] = WEEKDAYS
    facts: tuple[str, ...] = FACTS
    max_number: int = 999  # numbers in sentences are drawn from 0..max_number

    # Lists that `limited` shrinks (closed sets like months stay whole).
    _OPEN = ("names", "places", "objects", "colors", "verbs", "foods", "animals", "adjectives",
             "jobs", "likes")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                if len(value) < 2:
                    raise ValueError(f"Lexicon.{field.name}: expected at least 2 entries, got "
                                     f"{len(value)}")
                if not all(isinstance(w, str) and w.isascii() and w.strip() for w in value):
                    raise ValueError(f"Lexicon.{field.name}: expected non-empty ASCII strings, "
                                     f"got {value!r}")
        if self.max_number < 1:
            raise ValueError(f"Lexicon.max_number: expected >= 1, got {self.max_number}")

    def limited(self, words_per_list: int) -> Lexicon:
        """The same lexicon with every open word list cut to its first `words_per_list`."""
        if words_per_list < 2:
            raise ValueError(f"Lexicon.limited words_per_list: expected >= 2, got "
                             f"{words_per_list}")
        return dataclasses.replace(
            self, **{name: getattr(self, name)[:words_per_list] for name in self._OPEN})


DEFAULT_LEXICON = Lexicon()
