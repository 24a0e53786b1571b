"""Recipe loading rejects every user mistake with one line, before any work starts."""
import os

import pytest
import yaml

from curate.recipe import RecipeError, build_recipe, load_recipe, segments
from curate.stage import Job


def base(**stages):
    return {"name": "t", "input": {"path": "x.parquet"}, "output": {"path": "o"},
            "stages": stages.get("stages", [{"download": {}}, {"caption_text": {}}, {"exact_dedup": {}}, {"image_size": {}}])}


def test_shipped_recipe_loads_with_overrides():
    r = load_recipe("image_text", ["download.timeout_s=7", "output.samples_per_shard=5"], input_path="u.parquet",
                    output_path="out")
    d = r.to_dict()
    assert d["stages"][0]["download"]["timeout_s"] == 7.0
    assert d["output"]["samples_per_shard"] == 5
    assert d["input"]["path"] == os.path.abspath("u.parquet")  # as --output; recipe.yaml keeps it for a --resume


def test_segments_split_at_jobs():
    r = build_recipe(base())
    segs, jobs = segments(r)
    assert jobs == [2]
    assert segs == [[0, 1], [3]]
    assert isinstance(r.steps[2], Job)


@pytest.mark.parametrize("stages, message", [
    ([{"donwload": {}}], "unknown stage 'donwload'"),
    ([{"download": {"tmeout_s": 3}}], "download.tmeout_s: unknown field"),
    ([{"download": {"timeout_s": "soon"}}], "download.timeout_s"),
    ([{"download": {"retries": -1}}], "download.retries"),
    ([{"image_size": {}}], "needs column 'width'"),
    ([{"exact_dedup": {}}], "needs column 'sha256'"),
    ([{"download": {}}, {"exact_dedup": {"by": "pixels"}}], "exact_dedup.by"),
    ([{"caption_text": {"boilerplate": ["(unclosed"]}}], "bad regular expression"),
    ([], "non-empty list"),
    ([{"download": 3}], "must be a mapping"),
    ([{"download": {True: 1}}], "not a string"),
])
def test_bad_stage_config_is_one_line(stages, message):
    with pytest.raises(RecipeError) as err:
        build_recipe(base(stages=stages))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data, overrides, message", [
    ({"stages": [{"download": {"tmeout_s": 3}}]}, [], "stages[0] download.tmeout_s: unknown field (did you mean 'timeout_s'?)"),
    ({"stages": [{"download": {"concurency": 2}}]}, [], "stages[0] download.concurency: unknown field (did you mean 'concurrency'?)"),
    ({"output": {"sampels_per_shard": 5}}, [], "output.sampels_per_shard: unknown field (did you mean 'samples_per_shard'?)"),
    ({}, ["download.retires=2"], "--set download.retires: unknown field (did you mean 'retries'?)"),
    ({"stages": [{"download": {"zzz": 1}}]}, [], "stages[0] download.zzz: unknown field"),
    ({"ray": {"address": "head:6379"}}, [], "ray.address: unknown field (a recipe runs anywhere: give the cluster "
                                            "with --ray-address, RAY_ADDRESS or Pipeline.run(ray_address=))"),
])
def test_a_typo_in_a_setting_names_the_closest_one(tmp_path, data, overrides, message):
    recipe = {"name": "t", "stages": [{"download": {}}], **data}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path), overrides)
    assert str(err.value) == message


def test_bad_sections():
    with pytest.raises(RecipeError, match="unknown section 'stagess'"):
        build_recipe({"name": "t", "stagess": []})
    with pytest.raises(RecipeError, match="output.samples_per_shard"):
        build_recipe({**base(), "output": {"samples_per_shard": 0}})
    with pytest.raises(RecipeError, match="input.colour: unknown field"):
        build_recipe({**base(), "input": {"colour": "red"}})


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="no recipe file"):
        load_recipe(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [download: {\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(str(bad))
    bad.write_text("- just a list\n")
    with pytest.raises(RecipeError, match="YAML mapping"):
        load_recipe(str(bad))


def test_override_errors():
    with pytest.raises(RecipeError, match="no stage 'clip'"):
        load_recipe("image_text", ["clip.min=3"])
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe("image_text", ["download.timeout_s"])


def test_set_on_a_repeated_stage_names_which_one(tmp_path):
    """Two stages of one name: `--set name.field` is refused as ambiguous (it used to change only the first,
    silently); `name[i].field` sets the i-th."""
    path = tmp_path / "two.yaml"
    path.write_text("name: two\nstages:\n  - download: {}\n  - image_size: {min_side: 8}\n"
                    "  - caption_text: {}\n  - image_size: {min_side: 16}\n")
    with pytest.raises(RecipeError, match=r"2 image_size stages; say which: image_size\[0\]\.min_side or "
                                          r"image_size\[1\]\.min_side"):
        load_recipe(str(path), ["image_size.min_side=50"])
    rec = load_recipe(str(path), ["image_size[1].min_side=50", "caption_text[0].min_words=2"])
    sizes = [s.min_side for s in rec.steps if s.name == "image_size"]
    assert sizes == [8, 50]
    with pytest.raises(RecipeError, match=r"has 2 image_size stage\(s\) \(indices 0-1\)"):
        load_recipe(str(path), ["image_size[2].min_side=1"])
    assert load_recipe(str(path), ["download.threads=3"]).steps[0].threads == 3  # a single stage: no index needed


def test_a_set_value_a_stage_refuses_is_named_as_the_user_wrote_it(tmp_path, cli_inprocess):
    """`--set image_size[1].min_side=-5` was reported as `stages[3] image_size.min_side`: the position in the
    whole recipe, which the user never wrote. The flag's own key is named; a mistake in the file itself keeps
    its position in the file."""
    path = tmp_path / "two.yaml"
    path.write_text("name: two\nstages:\n  - download: {}\n  - image_size: {min_side: 8}\n"
                    "  - caption_text: {}\n  - image_size: {min_side: 16}\n")
    cases = [("image_size[1].min_side=-5", "--set image_size[1].min_side: Input should be greater than or equal to 0"),
             ("image_size[1].bogus=1", "--set image_size[1].bogus: unknown field"),
             ("image_size[1].max_aspect=.inf", "--set image_size[1].max_aspect: must be a finite number"),
             ("image_size[0].concurrency=0", "--set image_size[0].concurrency: Input should be greater than or equal to 1"),
             ("caption_text.min_words=x", "--set caption_text.min_words: Input should be a valid integer")]
    for item, message in cases:
        with pytest.raises(RecipeError) as err:
            load_recipe(str(path), [item])
        assert str(err.value).startswith(message), (item, str(err.value))
    res = cli_inprocess("run", str(path), "-i", str(path), "-o", str(tmp_path / "out"), "--dry-run",
                        "--set", "image_size[1].min_side=-5")
    assert res.returncode == 2
    assert res.stderr == "error: --set image_size[1].min_side: Input should be greater than or equal to 0\n"
    path.write_text(path.read_text().replace("{min_side: 16}", "{min_side: 16, typo: 1}"))
    with pytest.raises(RecipeError, match=r"^stages\[3\] image_size\.typo: unknown field$"):
        load_recipe(str(path), ["image_size[1].min_side=20"])  # the file's mistake, where the file has it


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """YAML keeps the last of two equal keys silently; a recipe refuses them (the dropped one may be meant)."""
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\nstages:\n  - download:\n      threads: 4\n      timeout_s: 3\n      threads: 8\n")
    with pytest.raises(RecipeError, match=r"key 'threads' appears twice in one mapping \(lines 4 and 6\)"):
        load_recipe(str(path))
    with pytest.raises(RecipeError, match="appears twice"):
        load_recipe("image_text", ["download.headers={a: 1, a: 2}"])
    path.write_text("name: x\nstages:\n  - download: &b {threads: 4}\n  - download_video: {<<: *b, timeout_s: 3}\n")
    from curate.recipe import load_yaml

    assert load_yaml(path.read_text())["stages"][1]["download_video"] == {"threads": 4, "timeout_s": 3}  # merge keys
