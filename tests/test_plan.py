"""The shard plan: splits, pairing and keys as pure functions, and the Plan transform on a real Beam pipeline."""
from bestiary.pipelines.plan import Plan, sample_key, shard_cuts, split_of, taxon_is_unseen
from bestiary.schemas.config import ShardConfig, SplitConfig
from tests.beam_helpers import run_transform

CFG = SplitConfig(unseen_fraction=0.25, val_fraction=0.1, test_fraction=0.2, salt="t")


def catalog(n_species=12, recs=6, imgs=3):
    audio, images = [], []
    for s in range(n_species):
        for r in range(recs):
            obs = f"src:obs-{s}-{r}"
            audio.append({"key": f"xc:{s}-{r}", "source": "xeno-canto", "source_id": f"{s}{r}", "observation_id": obs,
                          "taxon_id": f"t{s}", "duration_s": 25.0, "media_url": f"http://a/{s}/{r}"})
            if r % 2 == 0:  # some observations have their own photo
                images.append({"key": f"inat:p-{s}-{r}", "observation_id": obs, "taxon_id": f"t{s}",
                               "media_url": f"http://p/{s}/{r}", "license": "CC0-1.0", "attribution": "x"})
        for i in range(imgs):
            images.append({"key": f"ml:{s}-{i}", "observation_id": f"ml:obs-{s}-{i}", "taxon_id": f"t{s}",
                           "media_url": f"http://m/{s}/{i}", "license": "CC0-1.0", "attribution": "x"})
    return audio, images


def plan_shards(audio, images, split_cfg, shard_cfg, clip_seconds, max_clips, fixed=(), first=None):
    """The Plan transform's output as tasks {split, index, name, records}, and its rejects."""
    planned, rejects = run_transform(Plan(split_cfg, shard_cfg, clip_seconds, max_clips, first=first),
                                     audio, images, list(fixed))
    tasks = {}
    for r in planned:
        t = tasks.setdefault(r["shard"], {"split": r["split"], "index": r["shard_index"], "name": r["shard"],
                                          "records": []})
        t["records"].append(r)
    for t in tasks.values():
        t["records"].sort(key=lambda r: r["key"])
    return sorted(tasks.values(), key=lambda t: t["name"]), rejects


def test_unseen_split_is_species_disjoint_and_stable():
    audio, images = catalog()
    tasks, _ = plan_shards(audio, images, CFG, ShardConfig(samples_per_shard=10, min_shards_per_split=2), 10, 2)
    taxa = {}
    for t in tasks:
        for r in t["records"]:
            taxa.setdefault(r["taxon_id"], set()).add("unseen" if t["split"] == "unseen" else "seen")
    assert all(len(v) == 1 for v in taxa.values())
    assert any(v == {"unseen"} for v in taxa.values()) and any(v == {"seen"} for v in taxa.values())
    # adding records never moves a species or an observation
    more_audio, more_images = catalog(n_species=20)
    assert all(taxon_is_unseen(f"t{s}", CFG) == taxon_is_unseen(f"t{s}", CFG) for s in range(12))
    tasks2, _ = plan_shards(more_audio, more_images, CFG, ShardConfig(samples_per_shard=10), 10, 2)
    before = {r["key"]: t["split"] for t in tasks for r in t["records"]}
    after = {r["key"]: t["split"] for t in tasks2 for r in t["records"]}
    assert all(after[k] == v for k, v in before.items())


def test_images_never_cross_splits_and_pairing_prefers_the_observation():
    audio, images = catalog()
    tasks, rejects = plan_shards(audio, images, CFG, ShardConfig(samples_per_shard=10), 10, 2)
    image_split, obs_split = {}, {}
    for t in tasks:
        for r in t["records"]:
            assert image_split.setdefault(r["image_key"], t["split"]) == t["split"]
            assert obs_split.setdefault(r["observation_id"], t["split"]) == t["split"]
            if r["key"].endswith(("-0", "-2", "-4")):
                assert r["pairing"] == "same_observation" and r["image_key"].startswith("inat:")
            else:
                assert r["pairing"] == "same_species"
    planned = sum(len(t["records"]) for t in tasks)
    assert planned + len(rejects) == len(audio)  # every record is planned or rejected with a reason


def test_recordings_without_an_image_are_audio_text_samples_unless_images_are_required():
    audio, images = catalog(n_species=6)
    images = [i for i in images if i["taxon_id"] not in ("t0", "t1")]   # two species with no picture at all
    lonely = {a["key"] for a in audio if a["taxon_id"] in ("t0", "t1")}
    tasks, rejects = plan_shards(audio, images, CFG, ShardConfig(samples_per_shard=10), 10, 2)
    records = [r for t in tasks for r in t["records"]]
    assert not rejects and len(records) == len(audio)
    alone = {r["key"] for r in records if r["image_key"] is None}
    assert alone == lonely and all(r["pairing"] == "none" for r in records if r["key"] in alone)
    assert all(r["image_key"] is not None for r in records if r["key"] not in alone)
    tasks, rejects = plan_shards(audio, images, CFG, ShardConfig(samples_per_shard=10, require_image=True), 10, 2)
    assert {r["key"] for r in rejects} == lonely and all(r["reason"] == "no_image" for r in rejects)
    assert sum(len(t["records"]) for t in tasks) == len(audio) - len(lonely)


def test_shard_counts_and_minimum_per_split():
    audio, images = catalog()
    tasks, _ = plan_shards(audio, images, CFG, ShardConfig(samples_per_shard=1000, min_shards_per_split=2), 10, 2)
    by_split = {}
    for t in tasks:
        by_split[t["split"]] = by_split.get(t["split"], 0) + 1
        assert t["name"] == f"{t['split']}-{t['index']:06d}"
    assert set(by_split) == {"train", "val", "test", "unseen"} and all(v == 2 for v in by_split.values())
    again, _ = plan_shards(list(reversed(audio)), list(reversed(images)), CFG,
                           ShardConfig(samples_per_shard=1000, min_shards_per_split=2), 10, 2)
    assert again == tasks  # input order does not matter, nor the runner's


def test_split_of_is_a_pure_function_of_taxon_and_observation():
    assert split_of("t1", "o1", CFG) == split_of("t1", "o1", CFG)
    counts = {}
    for i in range(4000):
        s = split_of("seen-taxon", f"o{i}", SplitConfig(unseen_fraction=0.0, val_fraction=0.1, test_fraction=0.2))
        counts[s] = counts.get(s, 0) + 1
    assert abs(counts["test"] / 4000 - 0.2) < 0.03 and abs(counts["val"] / 4000 - 0.1) < 0.03


def test_sample_keys_are_safe_and_unique():
    k = sample_key("xeno-canto", "254462", 12.25)
    assert k == "xc_254462_00012250"
    assert "." not in sample_key("inaturalist", "sound-1.2/../x", 0)
    assert sample_key("macaulay", "1", 0) != sample_key("macaulay", "1", 10)


def test_shards_capped_by_size_too():
    audio, images = catalog()
    cfg = SplitConfig(unseen_fraction=0.0, val_fraction=0.0, test_fraction=0.0)
    by_count, _ = plan_shards(audio, images, cfg, ShardConfig(samples_per_shard=1000), 10, 2)
    by_mb, _ = plan_shards(audio, images, cfg, ShardConfig(samples_per_shard=1000, max_mb=5), 10, 2)
    assert len(by_count) == 1 and len(by_mb) == 18  # 144 clips of ~0.61 MB in 5 MB shards: ceil(87.3 / 5)


def test_shard_cuts_balance_clips_and_never_leave_a_shard_empty():
    hist = [(b, 1 + b % 3) for b in range(0, 6000, 60)]     # 100 buckets
    cuts = shard_cuts(hist, ShardConfig(samples_per_shard=20), 10, 48000)
    total = sum(c for _, c in hist)
    assert len(cuts) == -(-total // 20) and cuts == sorted(set(cuts)) and cuts[0] == 0
    sizes = [sum(c for b, c in hist if lo <= b < hi) for lo, hi in zip(cuts, cuts[1:] + [10 ** 9])]
    assert min(sizes) > 0 and max(sizes) - min(sizes) <= 3
    few = shard_cuts([(7, 1), (9, 1)], ShardConfig(samples_per_shard=1000, min_shards_per_split=4), 10, 48000)
    assert few == [7, 9]   # never more shards than buckets with records


def test_appended_shards_are_numbered_after_the_published_ones_and_images_keep_their_split():
    audio, images = catalog()
    fixed = [("ml:0-0", "test")]
    tasks, _ = plan_shards(audio, images, CFG, ShardConfig(samples_per_shard=10), 10, 2, fixed,
                           first={"train": 5, "test": 3})
    assert min(t["index"] for t in tasks if t["split"] == "train") == 5
    assert min(t["index"] for t in tasks if t["split"] == "test") == 3
    paired = {r["image_key"]: t["split"] for t in tasks for r in t["records"]}
    assert paired.get("ml:0-0", "test") == "test"
