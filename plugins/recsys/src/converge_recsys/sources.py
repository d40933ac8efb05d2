"""Where interactions come from: MovieLens 100k (fetched, checksum-verified) or your own CSV file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from converge_recsys.interactions import Attributes, Interactions, read_attributes, read_interactions


@dataclass
class InteractionData:
    """What a source loads: interactions and the optional side information of users and items."""

    interactions: Interactions
    users: Attributes | None = None
    items: Attributes | None = None


class MovieLens100k:
    """MovieLens 100k from the recbole==1.2.1 wheel: ratings 1-5 with timestamps; users' age, gender,
    occupation; movies' title, release year and genres."""

    user_fields = ("age", "gender", "occupation")
    item_fields = ("release_year", "class")

    def load(self, rating_scale: Sequence[float] = (1, 5)) -> InteractionData:
        from converge_recsys.plugin import ML100K

        interactions = read_interactions(ML100K.path("ml-100k.inter"), sep="\t", id_type="int",
                                         rating_scale=rating_scale)
        users = read_attributes(ML100K.path("ml-100k.user"), "user_id", self.user_fields, sep="\t", id_type="int")
        items = read_attributes(ML100K.path("ml-100k.item"), "item_id", self.item_fields, sep="\t",
                                title_column="movie_title", id_type="int")
        return InteractionData(interactions, users, items)


class InteractionsCsv:
    """Your interactions: one row per (user, item[, rating][, timestamp]); column names from config.

    Optional attribute files give side features and item titles (`user_file`/`item_file` keyed by the
    same ids). `rating_column: null` reads implicit feedback (for ranking only).
    """

    def __init__(self, path: str, user_column: str = "user_id", item_column: str = "item_id",
                 rating_column: str | None = "rating", timestamp_column: str | None = "timestamp", sep: str = ",",
                 id_type: str = "str", out_of_scale: str = "error", duplicates: str = "error",
                 user_file: str | None = None, user_fields: Sequence[str] = (), item_file: str | None = None,
                 item_fields: Sequence[str] = (), title_column: str | None = None) -> None:
        self.path, self.sep, self.id_type = path, sep, id_type
        self.columns = dict(user_column=user_column, item_column=item_column, rating_column=rating_column,
                            timestamp_column=timestamp_column)
        self.out_of_scale, self.duplicates = out_of_scale, duplicates
        self.user_file, self.user_fields = user_file, list(user_fields)
        self.item_file, self.item_fields, self.title_column = item_file, list(item_fields), title_column

    def load(self, rating_scale: Sequence[float] = (1, 5)) -> InteractionData:
        interactions = read_interactions(self.path, sep=self.sep, id_type=self.id_type, rating_scale=rating_scale,
                                         out_of_scale=self.out_of_scale, duplicates=self.duplicates, **self.columns)
        users = (read_attributes(self.user_file, self.columns["user_column"], self.user_fields, self.sep,
                                 id_type=self.id_type) if self.user_file else None)
        items = (read_attributes(self.item_file, self.columns["item_column"], self.item_fields, self.sep,
                                 self.title_column, self.id_type) if self.item_file else None)
        return InteractionData(interactions, users, items)
