"""course_lib: the code the chapters of "Build an LLM from scratch" build, collected so later chapters can import it.

Each module says which chapter defines it:

- :mod:`course_lib.model_size` -- chapter 1, parameter counts of transformer configurations (GPT-2, GPT-3).
- :mod:`course_lib.training_basics` -- chapter 2, gradient descent, accuracy, the digits data and a simple training loop.
- :mod:`course_lib.data` -- chapters 3-4, the one way to find (and verify, or download) a data file;
  ``python -m course_lib.data`` fetches them all.
- :mod:`course_lib.language_models` -- chapter 3, bigram counts, a neural bigram, sampling, and the TinyLLM.
- :mod:`course_lib.tokenizers` -- chapter 4, character, byte-pair (BPE) and GPT-2 tokenizers.
- :mod:`course_lib.embeddings` -- chapter 4, token embeddings and learned / sinusoidal positions.
- :mod:`course_lib.datasets` -- chapter 4, sliding-window (input, target) pairs and the train/validation split.
- :mod:`course_lib.attention` -- chapter 5, attention: keys, queries and values.
- :mod:`course_lib.gpt` -- chapter 6, the GPT model (GPT-2 parameter names; loads Hugging Face GPT-2 weights).
- :mod:`course_lib.trainer` -- chapter 7, a model-agnostic trainer: AdamW groups, warm-up + cosine, clipping, exact resume.
- :mod:`course_lib.generation` -- chapter 7, decoding: greedy, temperature, top-k, top-p, and generate().
- :mod:`course_lib.finetuning` -- chapter 8, classification head, instruction format and loss mask, LoRA.
- :mod:`course_lib.llama` -- chapter 9, a LLaMA-style model (RMSNorm, RoPE, SwiGLU, grouped-query attention;
  Hugging Face parameter names; loads LLaMA-family safetensors checkpoints).
- :mod:`course_lib.kv_cache` -- chapter 9, the key/value cache and cached generation.
- :mod:`course_lib.quantization` -- chapter 9, weight-only int8 and 4-bit quantization by hand.
- :mod:`course_lib.preference` -- chapter 10, response log-probabilities, the DPO loss, a reward model.
- :mod:`course_lib.chat_memory` -- chapter 11, conversation memory: a kept system line, recent turns, retrieved old turns.
- :mod:`course_lib.retrieval` -- appendix "Projects" (and chapter 11), TF-IDF passages searched by cosine similarity.
- :mod:`course_lib.projects` -- appendix "Projects", what the project notebooks share: small GPTs, boundary
  windows, bits per character, sampling to an end token.
- :mod:`course_lib.webapp` -- appendix "Projects", the course's model served as a small web app (Flask).
- :mod:`course_lib.distributed` -- appendix "Scaling up", data-parallel training under torchrun (DDP) with a
  subclass of chapter 7's trainer.
- :mod:`course_lib.testing` -- the checks the exercises use to tell a learner what is right and wrong.
- :mod:`course_lib.selfcheck` -- ``python -m course_lib.selfcheck NOTEBOOK``: run an exercise's visible tests.

The instructor's grading tools (sandbox, nbgrader preprocessors, parallel grading) are a separate
package, ``course_grading``: nothing here depends on it.
"""

__version__ = "0.1.0"
