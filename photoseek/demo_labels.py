"""The hand-labelled queries of the demo photos (data/samples): for each file name, queries a person
would expect to find it by. bench/offline_quality.py measures the encoders with them, and
``photoseek tune`` checks with them that an adapter keeps generic recall when the index holds these photos.
"""

from __future__ import annotations

LABELS: dict[str, list[str]] = {
    "astronaut.png": ["an astronaut", "a woman in a space suit"],
    "audio_mixer.jpg": ["an audio mixing desk", "a sound mixer with faders"],
    "bear.jpg": ["a tasmanian devil", "a wild animal with black fur"],  # the file name says bear; the photo is a devil
    "beverages.jpg": ["latte art", "people toasting with coffee", "a cup of coffee"],
    "black_cat.jpg": ["a cat", "a black cat"],
    "blue_tang.jpg": ["a tropical fish", "a blue and yellow fish", "fish"],
    "camera.jpg": ["a camera", "a DSLR camera"],
    "chelsea.png": ["a cat", "a tabby cat", "a cat's face"],
    "coffee.png": ["a cup of coffee", "espresso"],
    "controller.jpg": ["a game controller", "an xbox controller"],
    "drone.jpg": ["a drone", "a man flying a drone in the snow"],
    "dusk.jpg": ["a mountain peak at sunset", "mountains"],
    "fighter_fish.jpg": ["a betta fish", "a fish with long flowing fins", "fish"],
    "gold_fish.jpg": ["a goldfish", "fish"],
    "green_controller.jpg": ["a green joy-con", "a game controller"],
    "green_fish.jpg": ["a yellow tang", "a tropical fish", "fish"],
    "guitar.jpg": ["a guitar", "an electric guitar"],
    "hubble_deep_field.jpg": ["galaxies in deep space", "outer space"],
    "island.jpg": ["a small island in the sea", "a rocky island"],
    "jellyfish.jpg": ["a jellyfish"],
    "laptop.jpg": ["a laptop", "a computer"],
    "motorcycle_left.png": ["a motorcycle", "a red motorbike in a garage"],
    "mountain.jpg": ["a snowy mountain", "mountains"],
    "night.jpg": ["the milky way over a lake", "a starry night sky"],
    "puppies.jpg": ["puppies", "a dog", "two puppies in a bowl"],
    "puppy.jpg": ["a puppy", "a dog", "a golden retriever"],
    "red_fish.jpg": ["a red fish", "fish in an aquarium", "fish"],
    "rocket.jpg": ["a rocket", "a rocket on the launch pad"],
    "rotary_phone.jpg": ["an old telephone", "a rotary phone"],
    "sea_turtle.jpg": ["a sea turtle", "a turtle swimming"],
    "snow.jpg": ["snow covered hills", "a winter landscape"],
    "snowflake.jpg": ["a snowflake", "an ice crystal"],
    "sunrise.jpg": ["a sunrise over a field", "golden hour in the countryside"],
    "tent.jpg": ["a tent", "camping at night"],
}
