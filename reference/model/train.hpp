// gdn2 model — AdamW training on fresh task examples, held-out evaluation, checkpoints.
#pragma once

#include <functional>
#include <string>

#include "model/model.hpp"

namespace gdn2::model {

struct TrainConfig {
  int steps = 800;             // = 800    // optimiser steps
  int batch = 32;              // = 32     // sequences per step (fresh examples every step)
  double lr = 3e-3;            // = 3e-3   // peak learning rate (linear warm-up, cosine decay to 10%)
  int warmup = 100;            // = 100    // warm-up steps
  double weight_decay = 0.1;   // = 0.1    // AdamW decoupled weight decay (matrices only, model.hpp decays())
  double beta1 = 0.9;          // = 0.9
  double beta2 = 0.98;         // = 0.98
  double clip = 1.0;           // = 1.0    // global gradient-norm clip
  std::uint64_t seed = 0;      // = 0      // initialisation and the training stream
  int eval_every = 100;        // = 100    // held-out evaluation period (steps)
  int eval_examples = 256;     // = 256    // held-out sequences per periodic evaluation
};

// Held-out examples come from a stream no training step ever draws from.
std::uint64_t heldout_seed(std::uint64_t seed);
std::uint64_t train_seed(std::uint64_t seed);

struct Evaluation {
  int answers = 0, correct = 0;
  double loss = 0;
  std::vector<int> bucket_answers, bucket_correct;  // by bucket_of(query − value distance)
  double accuracy() const { return answers ? double(correct) / answers : 0; }
};
Evaluation evaluate(const ModelConfig& mc, const Params& p, const tasks::TaskConfig& tc, std::uint64_t seed, int examples,
                    int batch = 64);

struct StepLog {
  int step = 0;
  double loss = 0, lr = 0, grad_norm = 0, seconds = 0;
  double heldout_accuracy = -1;  // -1 when not evaluated at this step
};

// Trains in place. `on_step` is called after every step (the CLI draws its progress bar and JSON lines there).
// `stop`, if given, is asked before every step; when it says true, training ends there (the CLI's SIGINT). Returns
// the number of steps completed (cfg.steps unless stopped).
int train(const ModelConfig& mc, Params& p, const tasks::TaskConfig& tc, const TrainConfig& cfg,
          const std::function<void(const StepLog&)>& on_step, const std::function<bool()>& stop = {});

// A checkpoint directory: config.json (model, task and training configuration, final metrics) and one float32
// .npy per parameter. Written atomically (all files or none).
struct Checkpoint {
  ModelConfig model;
  tasks::TaskConfig task;
  TrainConfig train;
  Params params;
  std::string metrics_json = "{}";  // free-form results stored with it
};
void save_checkpoint(const std::string& dir, const Checkpoint& ck);
Checkpoint load_checkpoint(const std::string& dir);  // throws InputError naming the file and the problem

}  // namespace gdn2::model
