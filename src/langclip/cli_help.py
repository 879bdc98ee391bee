"""The CLI's shared help: the examples each subcommand's `--help` ends with (the search commands keep
theirs in search/cli.py) and the options several subcommands share."""

EPILOGS = {
    "tokenizer train": "example:\n  langclip tokenizer train --lang ru --wordfreq --merges 32000 --out tok/\n"
                       "  langclip tokenizer train --lang el --corpus captions.parquet --column caption_el --merges 8000 --out tok-el/\n"
                       "  langclip tokenizer train --lang de --wordfreq --english-words 100000 --out tok-de/",
    "tokenizer stats": "example:\n  langclip tokenizer stats --tokenizer tok/ --lang ru [--corpus queries.txt]",
    "tokenizer encode": "example:\n  langclip tokenizer encode --tokenizer tok/ \"фото полосатого кота\"",
    "cache build": "example:\n  langclip cache build --data pairs.parquet --clip ViT-B-32-quickgelu --pretrained openai --out cache/\n"
                   "  langclip cache build --data pairs.parquet --weights ViT-B-32.pt --out cache/   # --clip read from the file\n"
                   "  torchrun --nproc_per_node 8 -m langclip cache build --data 'shards/{00000..00999}.tar' ...\n"
                   "  langclip cache build --text-only --data parallel.tsv --clip ViT-B-32-quickgelu --weights ViT-B-32.pt --out cache-text/",
    "train": "example:\n  langclip train --config configs/ru-vitb32-clip-init.yaml\n"
             "  langclip train --config configs/ru-vitb32-clip-init.yaml epochs=3 optim.lr=1e-4 --resume latest\n"
             "  langclip train cache=cache/ model.tokenizer=tok/ out=runs/ru   # no config: defaults, the cache's CLIP\n"
             "  langclip train --config configs/ru-vitb32-clip-init.yaml precision=bf16-weights   # GPU: bf16 copy, fp32 masters\n"
             "  langclip train --config configs/ru-vitb32-clip-init.yaml 'zeroshot.datasets=[cifar10,cifar100]' "
             "zeroshot.data_root=~/data   # zero-shot accuracy each epoch\n"
             "  torchrun --nproc_per_node 8 -m langclip train --config configs/ru-vitb32-clip-init.yaml",
    "eval": "example:\n  langclip eval --model runs/ru --dataset cifar10 cifar100 caltech101 --lang ru --data-root ~/data --reference --out eval/\n"
            "  langclip eval --model runs/ru --dataset babel_imagenet xm3600 xtd10 food101 flowers102 --lang ru --data-root ~/data --reference --out eval/\n"
            "  langclip eval --model runs/ru --dataset imagefolder:photos/ --lang ru --classnames names.json\n"
            "  langclip eval --model runs/ru --dataset imagefolder:pets/ --lang ru --classnames \"кошка,собака\"\n"
            "  langclip eval --model runs/ru --dataset wds:~/data/wds_cifar10 wds:~/data/wds_flickr30k --lang ru --reference   "
            "# CLIP_benchmark's webdataset copies\n"
            "  langclip eval --model runs/ru-xlmr --dataset xm3600 --lang ru uk de --data-root ~/data --out eval/   # a column a language\n"
            "  langclip eval --model runs/de --dataset cifar10 cifar100 --lang de --classnames names-de/ --templates de.json   # names-de/cifar10.json ...",
    "eval-retrieval": "example:\n  langclip eval-retrieval --model runs/ru --data cache/            # the run's held-out images\n"
                      "  langclip eval-retrieval --model runs/ru --data test_pairs.parquet --out eval/",
    "predict": "example:\n  langclip predict --model runs/ru --image cat.jpg --labels \"кот,собака,лошадь\" --lang ru\n"
               "  langclip predict --model runs/ru --image photos/ --labels labels.txt --lang ru --out predictions.csv\n"
               "  langclip predict --model runs/ru --image *.jpg --labels @labels.txt --weights ViT-B-32.pt --device cpu\n"
               "  langclip predict --model runs/de --image cat.jpg --labels \"Katze,Hund\" --templates de.json",
    "similarity": "example:\n  langclip similarity --model runs/ru --images a.jpg b.jpg --texts texts.txt --out sim.png\n"
                  "  langclip similarity --model runs/ru --images *.jpg --texts \"красный круг\" \"синяя звезда\" --out sim.png",
    "encode": "example:\n  langclip encode --model runs/ru --texts queries.txt --out queries.npy      # queries.json names the rows\n"
              "  langclip encode --model runs/ru --images photos/ --out photos.parquet --dtype float16\n"
              "  python -c \"from langclip.encode import read_embeddings; emb, rows, record = read_embeddings('queries.npy')\"",
    "export": "example:\n  langclip export --model runs/ru --format open_clip --out export/\n"
              "  langclip export --model runs/ru --format hf --out export-hf/     # transformers CLIPModel\n"
              "  langclip export --model runs/ru --format onnx --out export-onnx/ # onnxruntime, no torch\n"
              "  langclip export --model runs/ru --format immich --out immich/ViT-B-32__openai/   # Immich smart search\n"
              "  langclip export --model downloaded-hf/ --format immich --out immich/ViT-B-32__openai/   # from an export\n"
              "  python -c \"import open_clip; open_clip.create_model_and_transforms('local-dir:export/')\"\n"
              "  langclip export --model runs/ru --out export/ --hub-id me/ru-clip && hf upload me/ru-clip export/ .   # then "
              "'hf-hub:me/ru-clip'",
    "demo": "examples:\n  langclip demo --out demo/          # ~2 minutes on a 2-core CPU, no network\n"
            "  langclip demo --lang uk --out demo-uk/     # the same world in Ukrainian (de: German, el: Greek, es: Spanish)",
    "data cc3m-tsv": "example:\n  langclip data cc3m-tsv --tsv Train_GCC-training.tsv --out cc3m_train.tsv",
    "data translations": "example:\n  langclip data translations --lang ru --translations cc3m_mt_train_ru.jsonl cc3m_mt_dev_ru.jsonl "
                         "--shards 'cc3m/{00000..00331}.tar' --out cc3m_ru.parquet",
}


def as_stored_option(p) -> None:
    p.add_argument("--as-stored", action="store_true",
                   help="read pictures as stored, as open_clip does; by default a photo is turned upright by "
                        "its EXIF orientation, as viewers show it (and as `index build` indexes it)")


def workers_option(p) -> None:
    p.add_argument("--workers", type=int, default=2,
                   help="processes decoding and preprocessing pictures beyond one batch of 32 (default 2; "
                        "0: in this process)")


def templates_option(p) -> None:
    p.add_argument("--templates", help="prompt templates, for a language langclip ships none for (or to replace "
                                       "them): a JSON file (a list, or {lang: list}), a text file (one a line), or "
                                       "the JSON list itself; {} marks the class name: "
                                       "'[\"ein Foto von {}\", \"ein Bild von {}\"]'")
