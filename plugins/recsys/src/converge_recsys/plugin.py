"""The recommendation plugin's registration: what `converge plugins` lists (no torch import here)."""

from converge import Plugin, Task, WheelDataset

_ML100K_DIR = "recbole/dataset_example/ml-100k"

ML100K = WheelDataset(
    name="ml100k",
    package="recbole",
    version="1.2.1",
    wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    files={
        "ml-100k.inter": (f"{_ML100K_DIR}/ml-100k.inter",
                          "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
        "ml-100k.user": (f"{_ML100K_DIR}/ml-100k.user",
                         "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"),
        "ml-100k.item": (f"{_ML100K_DIR}/ml-100k.item",
                         "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
    },
    description="MovieLens 100k: 100,000 ratings (1-5) of 1,682 movies by 943 users, with user and movie attributes",
    licence="GroupLens research licence: research use only, no redistribution (the data is fetched, never shipped)",
)

_PREPROCESSOR = "converge_recsys.serving:RecsysPreprocessor"
_POSTPROCESSOR = "converge_recsys.serving:RecsysPostprocessor"

plugin = Plugin(
    name="recsys",
    config_package="converge_recsys.conf",
    description="Recommendation: rating prediction and top-K ranking (MF, NCF, side features) on MovieLens or a CSV.",
    tasks=(
        Task(
            name="rating_prediction",
            task_class="converge_recsys.task:RatingPrediction",
            preprocessor=_PREPROCESSOR,
            postprocessor=_POSTPROCESSOR,
            description="explicit ratings: (user, item) -> rating (RMSE, MAE)",
        ),
        Task(
            name="topk_ranking",
            task_class="converge_recsys.task:TopKRanking",
            preprocessor=_PREPROCESSOR,
            postprocessor=_POSTPROCESSOR,
            description="implicit feedback: top-K items per user (HR@10, NDCG@10, Recall@10; full or sampled ranking)",
        ),
    ),
    datasets=(ML100K,),
)
