// gdn2 tasks — the scripted scenarios (scenarios.hpp).
#include "tasks/scenarios.hpp"

#include <functional>

namespace gdn2::tasks {

namespace {

struct Script {
  Scenario s;
  int K, V;
  std::vector<RowVec<double>> k, v, g, b, w;

  RowVec<double> one_hot(int i, int n) const {
    RowVec<double> e = RowVec<double>::Zero(n);
    e(i) = 1;
    return e;
  }
  // A token: key row `key` (-1 for none), value index (-1 for none), gates; q = k.
  void token(const std::string& label, Role role, int key, int value, const RowVec<double>& erase,
             const RowVec<double>& write, const RowVec<double>& decay, int source = -1) {
    k.push_back(key >= 0 ? one_hot(key, K) : RowVec<double>::Zero(K));
    v.push_back(value >= 0 ? RowVec<double>(s.values.row(value)) : RowVec<double>::Zero(V));
    b.push_back(erase);
    w.push_back(write);
    g.push_back(decay);
    s.labels.push_back(label);
    s.roles.push_back(role);
    s.source.push_back(source);
  }
  RowVec<double> all(int n, double x) const { return RowVec<double>::Constant(n, x); }
  void write(int key, int value, double erase = 1, double wr = 1) {
    token("write k" + std::to_string(key) + " <- " + s.value_names[value], Role::key, key, value, all(K, erase), all(V, wr),
          all(K, 0));
  }
  void query(int key, int answer_pos) {
    token("query k" + std::to_string(key), Role::query, key, -1, all(K, 0), all(V, 0), all(K, 0), answer_pos);
  }
  int now() const { return static_cast<int>(k.size()); }
};

Scenario finish(Script& sc, Variant variant) {
  const int T = sc.now(), K = sc.K, V = sc.V;
  Layer<double>& L = sc.s.layer;
  L.q = Tensor<double>({1, T, 1, K});
  L.k = L.q;
  L.g = L.q;
  L.b = L.q;
  L.v = Tensor<double>({1, T, 1, V});
  L.w = L.v;
  for (int t = 0; t < T; ++t) {
    RowVec<double> b = sc.b[t], w = sc.w[t], g = sc.g[t];
    if (variant != Variant::gdn2) {
      const double beta = (b.sum() + w.sum()) / (K + V);
      if (variant == Variant::linear) {
        b.setZero();
        w.setOnes();
      } else {
        b.setConstant(beta);
        w.setConstant(beta);
      }
      if (variant == Variant::gdn) g.setConstant(g.mean());
      if (variant == Variant::deltanet) g.setZero();
    }
    for (int i = 0; i < K; ++i) {
      L.q.data[t * K + i] = sc.k[t](i);
      L.k.data[t * K + i] = sc.k[t](i);
      L.g.data[t * K + i] = g(i);
      L.b.data[t * K + i] = b(i);
    }
    for (int j = 0; j < V; ++j) {
      L.v.data[t * V + j] = sc.v[t](j);
      L.w.data[t * V + j] = w(j);
    }
  }
  if (variant != Variant::gdn2) sc.s.title += std::string(" (gates tied as ") + variant_name(variant) + ")";
  return sc.s;
}

using Builder = std::function<void(Script&)>;

struct Entry {
  const char* name;
  const char* title;
  const char* story;
  Builder build;
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> list = {
      {"overwrite-erase", "Overwrite with erase",
       "k0 is bound to A, later rebound to D with the erase gate open (b = 1). The read r = S^T (b*k) is the old "
       "value A, so the write k (w*v - r)^T replaces A by D: the query of k0 returns D alone.",
       [](Script& sc) {
         sc.write(0, 0), sc.write(1, 1), sc.write(2, 2);
         const int rebind = sc.now();
         sc.write(0, 3);
         sc.query(0, rebind), sc.query(1, 1);
       }},
      {"overwrite-no-erase", "Overwrite without erase",
       "The same sequence with the erase gate closed at the rebinding (b = 0): nothing is read back, so D is added on "
       "top of A. The query of k0 returns A + D, a blend of the old and the new association.",
       [](Script& sc) {
         sc.write(0, 0), sc.write(1, 1), sc.write(2, 2);
         const int rebind = sc.now();
         sc.write(0, 3, /*erase=*/0);
         sc.query(0, rebind), sc.query(1, 1);
       }},
      {"forget-one-keep-another", "Erase without writing",
       "k0, k1, k2 hold A, B, C. One token opens the erase gate on k0 and closes the write gate (b = 1, w = 0): the "
       "row of k0 is read and subtracted, the others are untouched. KDA's single beta cannot do this with the erase "
       "gate (erasing fully writes fully; the tie gives beta = 0.5 here), but its per-channel decay can: g = -inf on "
       "k0's channel wipes that row without reading it.",
       [](Script& sc) {
         sc.write(0, 0), sc.write(1, 1), sc.write(2, 2);
         sc.token("erase k0 (b=1, w=0)", Role::key, 0, 3, sc.all(sc.K, 1), sc.all(sc.V, 0), sc.all(sc.K, 0));
         sc.query(0, -1), sc.query(1, 1), sc.query(2, 2);
       }},
      {"partial-erase", "Erase some key channels",
       "A key that spans two channels (k = (e0 + e1)/sqrt 2) holds A. It is rebound to B with the erase gate open on "
       "channel 0 only (b = e0): the read r = S^T (b*k) recovers only channel 0's share of A (A/2), so the query "
       "returns B + A/2 instead of B. The erase gate acts per key channel.",
       [](Script& sc) {
         sc.write(2, 2);
         RowVec<double> k01 = RowVec<double>::Zero(sc.K);
         k01(0) = k01(1) = std::sqrt(0.5);
         auto two = [&](const std::string& label, int value, const RowVec<double>& erase) {
           sc.token(label, Role::key, 0, value, erase, sc.all(sc.V, 1), sc.all(sc.K, 0));
           sc.k.back() = k01;
         };
         two("write k0+k1 <- A", 0, sc.all(sc.K, 1));
         const int pos = sc.now();
         RowVec<double> e0 = RowVec<double>::Zero(sc.K);
         e0(0) = 1;
         two("write k0+k1 <- B, erase ch 0 only", 1, e0);
         sc.token("query k0+k1", Role::query, 0, -1, sc.all(sc.K, 0), sc.all(sc.V, 0), sc.all(sc.K, 0), pos);
         sc.k.back() = k01;
         sc.query(2, 0);
       }},
      {"partial-write", "Write some value channels",
       "The write gate is per value channel: k0 <- A is written with w = 1 on the first half of the value channels "
       "only, so the first query returns only part of A (the readout marks it wrong). A second write (b = 0, w on the "
       "other half) completes the association: the second query returns 1.00 A.",
       [](Script& sc) {
         RowVec<double> first = RowVec<double>::Zero(sc.V), second = RowVec<double>::Ones(sc.V);
         first.head(sc.V / 2).setOnes();
         second.head(sc.V / 2).setZero();
         sc.write(1, 1);
         sc.token("write k0 <- A (first half)", Role::key, 0, 0, sc.all(sc.K, 1), first, sc.all(sc.K, 0));
         sc.query(0, 1);
         const int pos = sc.now();
         sc.token("write k0 <- A (second half, b=0)", Role::key, 0, 0, sc.all(sc.K, 0), second, sc.all(sc.K, 0));
         sc.query(0, pos), sc.query(1, 0);
       }},
      {"decay-forgetting", "Forgetting by decay alone",
       "k0..k3 hold A..D. Then four tokens write nothing but decay key channels 0 and 1 (g = -1, alpha = 0.37 per "
       "token). Rows 0 and 1 fade to 2% while rows 2 and 3 keep their values: per-channel decay forgets by key, "
       "without reading anything.",
       [](Script& sc) {
         for (int i = 0; i < 4; ++i) sc.write(i, i);
         RowVec<double> g = sc.all(sc.K, 0);
         g(0) = g(1) = -1;
         for (int i = 0; i < 4; ++i)
           sc.token("decay ch 0,1", Role::filler, -1, -1, sc.all(sc.K, 0), sc.all(sc.V, 0), g);
         sc.query(0, 0), sc.query(3, 3);
       }},
      {"soft-update", "Full erase, half write (the KDA tie)",
       "k0 <- A, then k0 <- D with b = 1 and w = 0.5: GDN-2 erases A completely and stores D at half strength. Tied as "
       "KDA (one beta = 0.75 for both) the same token erases only 75% of A, leaving 0.25 A + 0.75 D: compare the "
       "two in the viewer's comparison mode.",
       [](Script& sc) {
         sc.write(0, 0), sc.write(1, 1);
         const int pos = sc.now();
         sc.write(0, 3, 1.0, 0.5);
         sc.query(0, pos), sc.query(1, 1);
       }},
  };
  return list;
}

}  // namespace

std::vector<std::string> scenario_names() {
  std::vector<std::string> out;
  for (const auto& e : entries()) out.push_back(e.name);
  return out;
}

std::string scenario_help() {
  std::string s;
  for (const auto& e : entries()) s += std::string("  ") + e.name + std::string(26 - std::string(e.name).size(), ' ') + e.title + "\n";
  return s;
}

Scenario make_scenario(const std::string& name, Variant variant, int K, int V) {
  if (K < 4 || V < 4 || K > 256 || V > 256) throw InputError("scenario: K and V must lie in 4 .. 256");
  for (const auto& e : entries()) {
    if (name != e.name) continue;
    Script sc;
    sc.K = K;
    sc.V = V;
    sc.s.name = e.name;
    sc.s.title = e.title;
    sc.s.story = e.story;
    // Candidate values A, B, C, D: fixed random unit vectors (seed 7), the same in every scenario.
    Rng rng(7);
    const int n = 4;
    sc.s.values.resize(n, V);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < V; ++j) sc.s.values(i, j) = rng.normal();
      sc.s.values.row(i).normalize();
      sc.s.value_names.push_back(std::string(1, char('A' + i)));
    }
    e.build(sc);
    return finish(sc, variant);
  }
  throw InputError("unknown scenario '" + name + "' (expected one of:\n" + scenario_help() + ")");
}

}  // namespace gdn2::tasks
