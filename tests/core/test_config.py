from pathlib import Path

import pytest
import yaml

from movierec.core.config import Params, load_params, parse_params
from movierec.core.errors import ParamsError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_params_are_the_tutorial_defaults():
    params = load_params(ROOT / "params.yaml")
    assert params == Params()  # params.yaml and the dataclass defaults say the same thing
    assert (params.train.latent_dim, params.train.hidden_units) == (10, 400)
    assert (params.train.epochs, params.train.batch_size) == (15, 128)
    assert (params.train.learning_rate, params.train.momentum) == (0.08, 0.9)
    assert params.train.objective == "rating"  # the tutorial's MSE, unless asked otherwise
    assert params.preprocess.test_fraction == 0.2
    assert params.data.dataset == "synthetic"


def test_dvc_yaml_lists_every_key_of_its_stage_section():
    # One section per stage, and dvc.yaml lists exactly the keys that section holds.
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def leaves(d, prefix):
        for k, v in d.items():
            yield from leaves(v, f"{prefix}.{k}") if isinstance(v, dict) else [f"{prefix}.{k}"]

    assert dvc["stages"]["download"]["params"] == ["data.dataset"]
    for stage in ("ingest", "preprocess", "train", "recommend", "evaluate"):
        section = "data" if stage == "ingest" else stage
        assert sorted(dvc["stages"][stage]["params"]) == sorted(leaves(raw[section], section))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch'"),
        ({"trian": {}}, "unknown key 'trian'"),
        ({"train": {"epochs": 0}}, "train.epochs = 0 (expected an integer >= 1)"),
        ({"train": {"objective": "ranking"}},
         "train.objective = 'ranking' (expected one of rating, bce, bpr, softmax)"),
        ({"train": {"negatives": 0}}, "train.negatives = 0 (expected an integer >= 1)"),
        ({"train": {"negative_sampling": "zipf"}},
         "train.negative_sampling = 'zipf' (expected one of uniform, popularity)"),
        ({"train": {"objective": "softmax", "pool": "sampled", "batch_negatives": 200,
                    "batch_size": 128}},
         "train.batch_negatives = 200 (expected an integer in [0, batch_size = 128])"),
        ({"train": {"objective": "softmax", "batch_negatives": 32}},
         "train.batch_negatives = 32 (expected 0 unless objective is softmax and pool is"),
        ({"train": {"objective": "softmax", "pair_kernel": "cuda"}},
         "train.pair_kernel = 'cuda' (expected one of numba, tensorflow)"),
        ({"train": {"ndcg_k": 0}}, "train.ndcg_k = 0 (expected an integer >= 1)"),
        ({"train": {"ndcg_users": -1}}, "train.ndcg_users = -1 (expected 0 (every user)"),
        ({"train": {"strategy": "tpu"}},
         "train.strategy = 'tpu' (expected one of default, mirrored, multi_worker)"),
        ({"train": {"cpu_replicas": -1}}, "train.cpu_replicas = -1 (expected an integer >= 0"),
        ({"train": {"collective_timeout": 0}},
         "train.collective_timeout = 0 (expected an integer >= 1 (seconds))"),
        ({"train": {"epochs": "5"}}, "train.epochs = '5' (expected an integer)"),
        ({"train": {"epochs": True}}, "train.epochs = True (expected an integer)"),
        ({"train": {"epochs": 2.5}}, "train.epochs = 2.5 (expected an integer)"),
        ({"preprocess": {"test_fraction": 1.0}}, "preprocess.test_fraction = 1.0"),
        ({"preprocess": {"test_fraction": 0}}, "preprocess.test_fraction = 0.0"),
        ({"data": {"dataset": "ml-21m"}}, "data.dataset = 'ml-21m' (expected one of synthetic"),
        ({"data": {"synthetic": {"n_ratings": 10}}}, "data.synthetic.n_ratings = 10"),
        ({"train": {"momentum": 1.0}}, "train.momentum = 1.0 (expected a number in [0, 1))"),
        ({"train": [1, 2]}, "train = [1, 2] (expected a mapping"),
        ({"train": {"table_updates": "lazzy"}},
         "train.table_updates = 'lazzy' (expected one of lazy, dense, sparse)"),
        ({"train": {"table_updates": 1}}, "train.table_updates = 1 (expected a string)"),
        ({"evaluate": {"bias_reg_user": -1}}, "evaluate.bias_reg_user = -1.0 (expected a number"),
        ({"evaluate": {"bias_epochs": 0}}, "evaluate.bias_epochs = 0 (expected an integer >= 1)"),
        ({"preprocess": {"split": "temporal"}},
         "preprocess.split = 'temporal' (expected one of random, stratified_item, user_temporal)"),
        ({"recommend": {"n": 0}}, "recommend.n = 0 (expected an integer >= 1)"),
        ({"recommend": {"n": 10, "candidates": 5}},
         "recommend.candidates = 5 (expected 0 (exact: score every movie) or an integer >= n"),
        ({"evaluate": {"k": 0}}, "evaluate.k = 0 (expected an integer >= 1)"),
        ({"evaluate": {"relevance_threshold": 6}}, "evaluate.relevance_threshold = 6.0"),
        ({"evaluate": {"ranking_users": -1}}, "evaluate.ranking_users = -1 (expected 0"),
        ({"evaluate": {"ease_lambda": []}},
         "evaluate.ease_lambda = [] (expected a number or a non-empty list of them)"),
        ({"evaluate": {"ease_lambda": [100, "x"]}}, "evaluate.ease_lambda = [100, 'x'] (expected"),
        ({"evaluate": {"ease_lambda": [100, 0]}},
         "evaluate.ease_lambda = [100.0, 0.0] (expected a number > 0, or a list of them"),
        ({"evaluate": {"ease_max_items": 30000}},
         "evaluate.ease_max_items = 30000 (expected an integer from 1 to 20,000"),
        ({"evaluate": {"ease_holdout": 1}}, "evaluate.ease_holdout = 1.0 (expected a number in"),
        ({"evaluate": {"ease_holdout_users": -1}}, "evaluate.ease_holdout_users = -1 (expected 0"),
        ({"train": {"model": "svd"}}, "train.model = 'svd' (expected one of residual, mf, deep)"),
        ({"train": {"dropout": 1.0}}, "train.dropout = 1.0 (expected a number in [0, 1))"),
        ({"train": {"val_fraction": 1}}, "train.val_fraction = 1.0 (expected a number in [0, 1)"),
        ({"train": {"intra_op_threads": -1}}, "train.intra_op_threads = -1 (expected an integer"),
        ({"train": {"kernel_threads": -2}}, "train.kernel_threads = -2 (expected an integer"),
        ({"train": {"refit": True}}, "train.refit = True (expected false when val_fraction is 0"),
        ({"train": {"refit": "yes"}}, "train.refit = 'yes' (expected true or false)"),
        ({"train": {"refit": 1}}, "train.refit = 1 (expected true or false)"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer = 'rmsprop' (expected one of sgd"),
        ({"train": {"optimizer": "adam"}},
         "train.table_updates = 'lazy' (expected dense (Keras' Adam, every row) or sparse"),
        ({"train": {"l2_embeddings": -0.1}}, "train.l2_embeddings = -0.1 (expected a number >= 0"),
        ({"train": {"l2_dense": "0.1"}}, "train.l2_dense = '0.1' (expected a number)"),
        ({"train": {"l2_embeddings_form": "rows"}},
         "train.l2_embeddings_form = 'rows' (expected one of per_rating, whole_table)"),
        ({"train": {"l2_embeddings": 0.1, "l2_embeddings_form": "whole_table",
                    "table_updates": "sparse"}},
         "train.table_updates = 'sparse' (expected lazy or dense with l2_embeddings_form"),
    ],
)
def test_bad_params_name_key_value_and_expectation(raw, fragment):
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_ints_are_accepted_where_numbers_are_expected():
    params = parse_params({"train": {"learning_rate": 1}})
    assert params.train.learning_rate == 1.0
    assert isinstance(params.train.learning_rate, float)


def test_load_params_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_a_lambda_grid_is_a_list_and_one_number_is_a_grid_of_one():
    # `dvc exp run -S evaluate.ease_lambda=500` and `-S 'evaluate.ease_lambda=[100,500]'`.
    assert parse_params({"evaluate": {"ease_lambda": 500}}).evaluate.ease_lambda == (500.0,)
    assert parse_params({"evaluate": {"ease_lambda": [100, 500.5]}}).evaluate.ease_lambda == \
        (100.0, 500.5)
