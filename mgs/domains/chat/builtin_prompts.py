"""The embedded chat prompt set: everyday questions with our own short reference answers.

It lets the chat domain (and its offline similarity reward) run with no data files and no network: 48 simple
questions a small (~135M) model can answer a little, each with a 1-3 sentence reference written for this project.
The split is fixed and disjoint: every 4th prompt (index % 4 == 3) is in "test", the rest in "train".
"""

from __future__ import annotations

# (uid, question, reference answer)
BUILTIN_CHAT: tuple[tuple[str, str, str], ...] = (
    ("water-boil", "At what temperature does water boil at sea level?",
     "At sea level water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit."),
    ("sky-blue", "Why is the sky blue?",
     "Sunlight is scattered by the molecules of the air, and blue light is scattered much more than red light "
     "because of its shorter wavelength, so blue light reaches our eyes from all over the sky."),
    ("healthy-breakfast", "Can you suggest a healthy breakfast?",
     "A bowl of oatmeal with fresh fruit and a handful of nuts, or whole-grain toast with eggs, gives you fibre, "
     "protein and lasting energy."),
    ("sleep-better", "How can I sleep better at night?",
     "Go to bed and wake up at the same time every day, avoid screens and caffeine in the evening, and keep your "
     "bedroom dark, quiet and cool."),
    ("photosynthesis", "What is photosynthesis?",
     "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make sugar for "
     "energy, releasing oxygen as a by-product."),
    ("capital-france", "What is the capital of France?",
     "The capital of France is Paris."),
    ("thank-you-note", "Write a short thank-you note to a friend who helped me move.",
     "Thank you so much for helping me move last weekend! I could not have carried all those boxes without you, "
     "and I owe you dinner soon."),
    ("exercise-benefits", "What are the benefits of regular exercise?",
     "Regular exercise strengthens the heart and muscles, helps control weight, improves sleep and mood, and "
     "lowers the risk of diseases such as diabetes."),
    ("rainbow", "How does a rainbow form?",
     "A rainbow forms when sunlight enters raindrops, bends, reflects off the back of the drop and splits into its "
     "colours, which we see as an arc opposite the sun."),
    ("save-money", "Give me three tips to save money.",
     "Make a monthly budget and track your spending, cook at home instead of eating out, and set up an automatic "
     "transfer to a savings account each payday."),
    ("cat-or-dog", "Is a cat or a dog a better pet for a small apartment?",
     "A cat is usually easier in a small apartment because it needs less space and no daily walks, though a small, "
     "calm dog can also be happy there if it gets enough exercise."),
    ("hydrated", "Why is it important to drink enough water?",
     "Water keeps your body temperature steady, carries nutrients, helps digestion and keeps your kidneys working; "
     "even mild dehydration can cause headaches and tiredness."),
    ("haiku-autumn", "Write a haiku about autumn.",
     "Crimson leaves drifting,\ncool wind whispers through bare trees,\nthe year exhales slow."),
    ("moon-phases", "Why does the moon change shape?",
     "The moon does not change shape; as it orbits the Earth we see different parts of its sunlit half, which "
     "produces the phases from new moon to full moon."),
    ("boil-egg", "How do I boil an egg?",
     "Put the egg in a pot of boiling water and cook it for about 7 minutes for a soft yolk or 10 minutes for a "
     "hard one, then cool it in cold water before peeling."),
    ("learn-language", "What is a good way to learn a new language?",
     "Practise a little every day, listen to and speak with native speakers, and learn common words and phrases "
     "first; apps, podcasts and simple books help too."),
    ("gravity", "What is gravity?",
     "Gravity is the force by which objects with mass attract each other; it keeps us on the ground and keeps the "
     "Earth in orbit around the sun."),
    ("birthday-message", "Write a birthday message for my sister.",
     "Happy birthday to the best sister in the world! Thank you for always being there for me; I hope your day is "
     "full of laughter, cake and everything you love."),
    ("reduce-stress", "How can I reduce stress?",
     "Take regular breaks, get some exercise and enough sleep, try slow deep breathing, and talk to friends or "
     "family about what is worrying you."),
    ("seasons", "Why do we have seasons?",
     "Seasons happen because the Earth's axis is tilted, so as the Earth orbits the sun each hemisphere receives "
     "more direct sunlight in summer and less in winter."),
    ("largest-ocean", "What is the largest ocean on Earth?",
     "The Pacific Ocean is the largest ocean on Earth, covering about a third of the planet's surface."),
    ("plant-care", "How often should I water a houseplant?",
     "Most houseplants need water when the top few centimetres of soil feel dry, often about once a week, but "
     "succulents need much less and you should never leave the roots in standing water."),
    ("recycling", "Why is recycling important?",
     "Recycling saves raw materials and energy, reduces the waste sent to landfills, and lowers pollution and "
     "greenhouse gas emissions."),
    ("job-interview", "How should I prepare for a job interview?",
     "Research the company, practise answers to common questions, prepare a few questions of your own, and "
     "arrive on time dressed neatly."),
    ("dinosaurs", "What happened to the dinosaurs?",
     "Most dinosaurs died out about 66 million years ago, most likely after a huge asteroid hit the Earth and "
     "changed the climate; birds are their living descendants."),
    ("make-tea", "How do I make a good cup of tea?",
     "Pour freshly boiled water over a tea bag or loose leaves, let it steep for three to five minutes, then remove "
     "the tea and add milk, sugar or lemon if you like."),
    ("heart-function", "What does the heart do?",
     "The heart is a muscle that pumps blood through the body, carrying oxygen and nutrients to the organs and "
     "taking away waste such as carbon dioxide."),
    ("weekend-ideas", "What can I do on a rainy weekend?",
     "You could read a good book, watch a film, cook something new, play board games with friends, or visit a "
     "museum or library."),
    ("internet", "What is the internet?",
     "The internet is a worldwide network of connected computers that exchange data, which lets people use the "
     "web, send email and stream video."),
    ("apology", "Write a short apology for missing a meeting.",
     "I am sorry I missed our meeting today; something came up unexpectedly. Could we reschedule for a time that "
     "suits you this week?"),
    ("bees", "Why are bees important?",
     "Bees pollinate many of the plants and crops we eat, such as fruits and vegetables, so without them food "
     "production and wild ecosystems would suffer."),
    ("fever", "What should I do if I have a mild fever?",
     "Rest, drink plenty of fluids and take a fever reducer such as paracetamol if needed; see a doctor if the "
     "fever is very high or lasts more than a few days."),
    ("time-management", "How can I manage my time better?",
     "Write a to-do list, tackle the most important tasks first, break big jobs into small steps, and limit "
     "distractions such as your phone."),
    ("volcano", "How does a volcano erupt?",
     "Melted rock called magma rises from deep inside the Earth, and when pressure builds up it bursts through the "
     "surface as lava, ash and gas."),
    ("name-puppy", "Suggest some names for a new puppy.",
     "Some friendly puppy names are Max, Bella, Charlie, Luna, Biscuit and Daisy."),
    ("vitamins", "Why do we need vitamins?",
     "Vitamins are nutrients the body needs in small amounts to grow, fight infections, heal and turn food into "
     "energy; a varied diet usually provides them."),
    ("clouds", "How are clouds formed?",
     "Clouds form when warm, moist air rises and cools, so its water vapour condenses into tiny droplets or ice "
     "crystals around specks of dust."),
    ("read-more", "How can I find time to read more books?",
     "Carry a book or e-reader with you, read for a few minutes before bed, and swap some social media time for "
     "reading."),
    ("solar-system", "How many planets are in our solar system?",
     "There are eight planets in our solar system: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and "
     "Neptune."),
    ("friendship", "What makes a good friend?",
     "A good friend is honest, kind and reliable, listens to you, supports you in hard times and is happy for you "
     "when things go well."),
    ("bread-stale", "Why does bread go stale?",
     "Bread goes stale mainly because its starch slowly recrystallises and the bread loses moisture, which makes it "
     "hard and dry."),
    ("study-tips", "Give me some tips for studying for an exam.",
     "Start early, study in short focused sessions, test yourself with practice questions, and get a good night's "
     "sleep before the exam."),
    ("electricity", "What is electricity?",
     "Electricity is the flow of electric charge, usually electrons moving through a wire, and it powers lights, "
     "machines and devices."),
    ("picnic", "What should I bring to a picnic?",
     "Bring a blanket, sandwiches, fruit, snacks and plenty of water, plus napkins, a bag for rubbish and sunscreen."),
    ("leaves-change", "Why do leaves change colour in the fall?",
     "In autumn trees stop making green chlorophyll, so the yellow and orange pigments that were hidden show "
     "through, and some trees make red pigments as well."),
    ("public-speaking", "How can I get better at public speaking?",
     "Practise your talk out loud several times, know your main points well, speak slowly, and start with small "
     "audiences to build confidence."),
    ("tides", "What causes ocean tides?",
     "Tides are caused mainly by the moon's gravity pulling on the oceans, with a smaller pull from the sun, which "
     "makes the sea level rise and fall about twice a day."),
    ("email-greeting", "How should I start a formal email?",
     "Start with a polite greeting such as 'Dear Ms Smith,' followed by a short sentence stating why you are "
     "writing."),
)


def builtin_split(split: str) -> list[tuple[str, str, str]]:
    """The built-in prompts of `split` ("train": 36, "test": 12, "all": 48), disjoint between train and test."""
    if split == "all":
        return list(BUILTIN_CHAT)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for the built-in chat prompts; choose from ['all', 'test', 'train']")
    want_test = split == "test"
    return [row for i, row in enumerate(BUILTIN_CHAT) if (i % 4 == 3) == want_test]
