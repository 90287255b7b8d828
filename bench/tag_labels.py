"""Hand labels for the demo photos (data/samples), written by looking at each photo: the tags it
truly has (ancestors follow from the vocabulary), and broad queries with the photos they should find.
Used by bench/tags.py."""

PHOTO_TAGS = {
    "astronaut.png": ["person", "space shuttle"],
    "audio_mixer.jpg": ["electronics", "music"],
    "bear.jpg": ["bear"],
    "beverages.jpg": ["drink"],
    "black_cat.jpg": ["cat"],
    "blue_tang.jpg": ["fish"],
    "camera.jpg": ["camera"],
    "chelsea.png": ["tabby cat"],
    "coffee.png": ["espresso"],
    "controller.jpg": ["video game", "electronics"],
    "drone.jpg": ["person", "snow"],
    "dusk.jpg": ["mountain", "sunset"],
    "fighter_fish.jpg": ["fish"],
    "gold_fish.jpg": ["goldfish"],
    "green_controller.jpg": ["video game", "electronics"],
    "green_fish.jpg": ["fish"],
    "guitar.jpg": ["electric guitar"],
    "hubble_deep_field.jpg": ["outer space"],
    "island.jpg": ["island", "sea"],
    "jellyfish.jpg": ["jellyfish", "underwater"],
    "laptop.jpg": ["laptop computer"],
    "motorcycle_left.png": ["motorcycle"],
    "mountain.jpg": ["mountain"],
    "night.jpg": ["night", "lake"],
    "puppies.jpg": ["dog"],
    "puppy.jpg": ["golden retriever"],
    "red_fish.jpg": ["fish", "underwater"],
    "rocket.jpg": ["spacecraft", "night"],
    "rotary_phone.jpg": ["rotary dial telephone"],
    "sea_turtle.jpg": ["turtle", "underwater"],
    "snow.jpg": ["snow", "mountain"],
    "snowflake.jpg": ["snow"],
    "sunrise.jpg": ["sunrise"],
    "tent.jpg": ["camping", "night"],
}

ANIMALS = ["bear.jpg", "black_cat.jpg", "blue_tang.jpg", "chelsea.png", "fighter_fish.jpg", "gold_fish.jpg",
           "green_fish.jpg", "jellyfish.jpg", "puppies.jpg", "puppy.jpg", "red_fish.jpg", "sea_turtle.jpg"]
FISH = ["blue_tang.jpg", "fighter_fish.jpg", "gold_fish.jpg", "green_fish.jpg", "red_fish.jpg"]

# Broad queries, as people type them, and the photos each should find.
BROAD_QUERIES = {
    "an animal": ANIMALS,
    "animals": ANIMALS,
    "a mammal": ["bear.jpg", "black_cat.jpg", "chelsea.png", "puppies.jpg", "puppy.jpg"],
    "a fish": FISH,
    "a vehicle": ["motorcycle_left.png", "rocket.jpg"],
    "a musical instrument": ["guitar.jpg"],
    "a drink": ["beverages.jpg", "coffee.png"],
    "electronics": ["audio_mixer.jpg", "camera.jpg", "controller.jpg", "green_controller.jpg", "laptop.jpg",
                    "rotary_phone.jpg"],
    "a computer": ["laptop.jpg"],
    "a cat": ["black_cat.jpg", "chelsea.png"],
    "puppies": ["puppies.jpg", "puppy.jpg"],
    "outer space": ["astronaut.png", "hubble_deep_field.jpg", "rocket.jpg"],
    "mountains": ["dusk.jpg", "mountain.jpg", "snow.jpg"],
    "a reptile": ["sea_turtle.jpg"],
    "underwater": ["jellyfish.jpg", "red_fish.jpg", "sea_turtle.jpg"],
    "a video game": ["controller.jpg", "green_controller.jpg"],
    "a sea creature": ["jellyfish.jpg"],
    "a person": ["astronaut.png", "drone.jpg"],
}
