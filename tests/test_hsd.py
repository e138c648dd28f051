"""HSD (cm3-hsd.md §5; plumbing §8 item 6; A-HSD-1, -2, -6, -8, -12, -16) on a small stand-in world
that compiles in seconds; STS2 runs are in test_hsd_slow.py.

The stand-in has STS2's interface: 3 agents with 9 actions (5-8 push toward +z, -z, +x, -x), flat
observations whose first 10 features are the agent's own position, velocity and the time, the global
state and `outcome` in `info`, and episodes of a fixed length (37 here). It ends in a win if agent 0's
last action is 0 (do nothing), else in a loss, so a greedy policy decides the evaluation's win rate.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import assert_rejected_before_compiling
from flax import struct
from gradcheck import assert_grad_matches_fd, f64

import jaxmcg
from jaxmcg import skill_decoder as SD
from jaxmcg import spaces
from jaxmcg.algos import hsd
from jaxmcg.environment import Environment, EnvParams
from jaxmcg.rollout import episode_rollout

_PUSH = np.array([[0, 0]] * 5 + [[0, 1], [0, -1], [1, 0], [-1, 0]], np.float32)
OBS_DIM = 12


@struct.dataclass
class WorldState:
    position: jax.Array  # [3, 2]
    velocity: jax.Array
    time: jax.Array


@struct.dataclass
class WorldParams(EnvParams):
    max_steps_in_episode: int = 40
    length: int = 37  # the episode terminates after this many steps


class World(Environment):
    num_agents = 3

    @property
    def default_params(self):
        return WorldParams()

    def reset_env(self, key, params):
        state = WorldState(jax.random.uniform(key, (3, 2), minval=-1.0, maxval=1.0),
                           jnp.zeros((3, 2)), jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def step_env(self, key, state, actions, params):
        velocity = 0.8 * state.velocity + 0.1 * jnp.asarray(_PUSH)[actions]
        nxt = WorldState(state.position + velocity, velocity, state.time + 1)
        terminated = nxt.time >= params.length
        outcome = jnp.where(terminated, jnp.where(actions[0] == 0, 1, -1), 0)
        reward = jnp.full((3,), 0.01 + outcome, jnp.float32)
        flat = lambda s: jnp.concatenate([s.position, s.velocity], 1).reshape(-1)  # noqa: E731
        # one-hot event (t + n) mod 8 for agent n: HSD-scripted's subtask rewards are predictable
        events = jax.nn.one_hot((nxt.time + jnp.arange(3)) % 8, 8, dtype=jnp.int32)
        info = {"state": flat(state), "next_state": flat(nxt), "outcome": outcome,
                "role_events": events}
        return self.get_obs(nxt, params), nxt, reward, terminated, info

    def get_obs(self, state, params=None):
        t = jnp.full((3, 1), state.time / 40.0)
        others = jnp.broadcast_to(jnp.mean(state.position, 0), (3, 2))
        return jnp.concatenate([state.position, state.velocity, t, others,
                                jnp.zeros((3, OBS_DIM - 7))], 1)

    def observation_space(self, params=None):
        return spaces.Box(-jnp.inf, jnp.inf, (OBS_DIM,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(9)


ENV = World()
PARAMS = ENV.default_params
# alpha is set in the state where a test needs it; at 0 the low level learns from R_I alone
CONFIG = hsd.Config(num_skills=4, buffer_size=2000, batch_size=64, steps_per_train=1,
                    pretrain_episodes=2, eps_div=50.0, decoder_batch=24, lr_decoder=3e-3,
                    lr_low=1e-3, lr_high=1e-3, alpha_start=0.0, alpha_end=0.0, eval_period=10,
                    eval_episodes=4)
GAMMA = CONFIG.gamma


@pytest.fixture(scope="module")
def world():
    """(wrapped env, jit init, jit rollout of one episode, jit update), compiled once."""
    env = hsd.wrap_env(ENV, CONFIG)
    init = jax.jit(lambda k: hsd.init(k, env, PARAMS, CONFIG))
    rollout = jax.jit(lambda s, k: episode_rollout(
        env, PARAMS, lambda o, kk: hsd.act(s, o, kk), k, 1, env.horizon(PARAMS)))
    return env, init, rollout, jax.jit(hsd.update)


@pytest.fixture(scope="module")
def episode(world):
    """One 37-step episode and the state after `update` on it, with alpha set to 0.5."""
    _, init, rollout, update = world
    state = init(jax.random.PRNGKey(0)).replace(alpha=jnp.float32(0.5))
    batch = rollout(state, jax.random.PRNGKey(1))
    return state, batch, update(state, batch)[0]


def _preprocessed(segment):
    """§5.3 by hand: steps 0, 2, 4, 6, 8 of a [10, N, D] segment, features 0-9, differences:
    [N, 4, 10]."""
    kept = segment[::2, :, :10]
    return np.swapaxes(kept[1:] - kept[:-1], 0, 1)


def test_skills_persist_for_t_seg_steps(episode):
    """The wrapper carries z: skills change only at t = 0, 10, 20, 30 and are observed back."""
    _, batch, _ = episode
    skill = np.asarray(batch.action.skill[:, 0])  # [T, N]
    valid = np.asarray(batch.valid[:, 0]).astype(bool)
    assert valid.sum() == 37
    for t in range(1, 37):
        if t % 10:
            np.testing.assert_array_equal(skill[t], skill[t - 1])
        np.testing.assert_array_equal(np.asarray(batch.obs["skill"][t, 0]), skill[t - 1])
    np.testing.assert_array_equal(np.asarray(batch.obs["time"][:37, 0, 0]), np.arange(37))


def test_plumbing_of_one_37_step_episode(episode):
    """§8 item 6 with t_seg = 10: R_I at t = 10, 20, 30 (code timing, A-HSD-2) equal to the decoder's
    p(z | tau); 4 high-level transitions, the last with exponent 37 mod 10 = 7 and done = 1
    (A-HSD-1); D grows by 3 * 3 + 3 = 12 with the straddling last window (A-HSD-16); decoder inputs
    [4, 10]."""
    before, batch, after = episode
    obs = np.asarray(batch.obs["obs"][:, 0])  # [T, N, D]
    skill = np.asarray(batch.action.skill[:, 0])
    reward = np.asarray(batch.reward[:, 0])  # [T, N]
    # B_L: one row per step; R_L = 0.5 R + 0.5 R_I
    low = jax.tree_util.tree_map(np.asarray, after.buffer_low.data)
    assert int(after.buffer_low.size) == 37
    intrinsic = 2 * (low["reward"][:37] - 0.5 * reward[:37])
    np.testing.assert_array_equal(np.nonzero(np.abs(intrinsic).sum(1) > 1e-7)[0], [10, 20, 30])
    decode = jax.jit(SD.skill_probability, static_argnums=0)
    for k in range(3):
        x = _preprocessed(obs[10 * k:10 * k + 10])
        assert x.shape == (3, 4, 10)
        p = decode(before.decoder, before.decoder_params, x, skill[10 * k])
        np.testing.assert_allclose(intrinsic[10 * (k + 1)], p, rtol=1e-5)
        np.testing.assert_array_equal(low["skill"][10 * (k + 1)], skill[10 * (k + 1)])  # new z
    # B_H: 4 transitions with gamma^10 * sum R, the last gamma^7 * sum R and done = 1
    high = jax.tree_util.tree_map(np.asarray, after.buffer_high.data)
    assert int(after.buffer_high.size) == 4
    team = reward[:37, 0]
    expected = [GAMMA ** 10 * team[0:10].sum(), GAMMA ** 10 * team[10:20].sum(),
                GAMMA ** 10 * team[20:30].sum(), GAMMA ** 7 * team[30:37].sum()]
    np.testing.assert_allclose(high["reward"][:4], expected, rtol=1e-5)
    np.testing.assert_array_equal(high["done"][:4], [0, 0, 0, 1])
    np.testing.assert_allclose(high["discount"][:4], GAMMA)
    np.testing.assert_array_equal(high["skill"][:4], skill[[0, 10, 20, 30]])
    np.testing.assert_allclose(high["next_obs"][2], obs[30])
    np.testing.assert_allclose(high["next_obs"][3], np.asarray(batch.next_obs["obs"][36, 0]))
    np.testing.assert_allclose(high["next_state"][3], np.asarray(batch.info["next_state"][36, 0]))
    # D: 3 boundary segments and the last 10 observations, each for 3 agents, in that order
    assert int(after.dataset_size) == int(before.dataset_size) + 12 == 12
    assert after.dataset["x"].shape[1:] == (4, 10)
    np.testing.assert_allclose(after.dataset["x"][9:12], _preprocessed(obs[27:37]), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_array_equal(after.dataset["skill"][:12],
                                  np.concatenate([skill[0], skill[10], skill[20], skill[36]]))
    assert [SD.segment_length(t, 2) for t in (5, 10, 20)] == [2, 4, 9]


def test_thesis_timing_and_exact_smdp_reward(episode):
    """`intrinsic_on_last_step` puts R_I on the last step of every complete segment (t = 9, 19, 29;
    thesis L616) under that segment's z; `smdp_exact` stores sum_i gamma^i R_i with a gamma^10
    bootstrap (A-HSD-1)."""
    state, batch, _ = episode
    config = dataclasses.replace(CONFIG, intrinsic_on_last_step=True, smdp_exact=True)
    ep = jax.tree_util.tree_map(lambda x: x[0], hsd._episodes(batch))
    out = jax.jit(hsd.episode_transitions)(state.replace(config=config), ep)
    given = np.nonzero(np.asarray(out["intrinsic"]).sum(1))[0]
    np.testing.assert_array_equal(given, [9, 19, 29])
    team = np.asarray(batch.reward[:37, 0, 0])
    disc = GAMMA ** np.arange(10)
    expected = [team[0:10] @ disc, team[10:20] @ disc, team[20:30] @ disc, team[30:37] @ disc[:7]]
    np.testing.assert_allclose(out["high"]["reward"][:4], expected, rtol=1e-5)
    np.testing.assert_allclose(out["high"]["discount"], GAMMA ** 10, rtol=1e-6)
    # an episode of exactly 40 steps: the final segment is complete and gets R_I at t = 39
    ep40 = dict(ep, valid=jnp.ones(40))
    out40 = jax.jit(hsd.episode_transitions)(state.replace(config=config), ep40)
    np.testing.assert_array_equal(np.nonzero(np.asarray(out40["intrinsic"]).sum(1))[0],
                                  [9, 19, 29, 39])


def test_variants_low_level_rewards(episode):
    """HSD-ext: R_L = R_I whatever alpha (A-HSD-6). HSD-scripted: role 0 is rewarded for goals
    (event 0), role 1 for regains (events 5-7) and nothing else (§5.5)."""
    state, batch, _ = episode
    ep = jax.tree_util.tree_map(lambda x: x[0], hsd._episodes(batch))
    transitions = jax.jit(hsd.episode_transitions)
    ext = transitions(state.replace(config=dataclasses.replace(CONFIG, variant="hsd_ext")), ep)
    np.testing.assert_allclose(ext["low"]["reward"], ext["intrinsic"])
    scripted_cfg = dataclasses.replace(CONFIG, variant="hsd_scripted", num_skills=2)
    ep2 = dict(ep, skill=ep["skill"] % 2)
    scripted = transitions(state.replace(config=scripted_cfg), ep2)
    events = np.argmax(np.asarray(batch.info["role_events"][:, 0]), -1)  # [T, N] event index
    z = np.asarray(ep2["skill"])
    expected = np.where(z == 0, events == 0, np.isin(events, [5, 6, 7])) * np.asarray(ep["valid"])[:, None]
    np.testing.assert_array_equal(scripted["low"]["reward"], expected)
    assert expected.sum() > 0


def test_alpha_decrements_only_on_evaluations_won_often_enough(world, episode):
    """The eval runs when an eval_period boundary is crossed; alpha drops by alpha_step iff the
    greedy win rate is >= alpha_threshold (A-HSD-12)."""
    _, _, _, update = world
    state, batch, _ = episode

    def greedy(action):  # Q_theta = a constant preferring `action`: agent 0 wins iff it is 0
        params = jax.tree_util.tree_map(jnp.zeros_like, state.low_params)
        params["Dense_2"]["bias"] = params["Dense_2"]["bias"].at[action].set(100.0)
        return params

    for action, episodes_done, alpha in ((0, 9, 0.49), (5, 9, 0.5), (0, 5, 0.5)):
        s = state.replace(low_params=greedy(action), low_target=greedy(action),
                          episode=jnp.int32(episodes_done))
        s, metrics = update(s, batch)
        assert float(s.alpha) == pytest.approx(alpha), (action, episodes_done)
        if episodes_done == 9:
            assert float(metrics["hsd/eval_win_rate"]) == (1.0 if action == 0 else 0.0)
    a = jnp.float32(0.65)
    assert float(hsd.alpha_schedule(a, 0.7, hsd.Config())) == pytest.approx(0.64)
    assert float(hsd.alpha_schedule(a, 0.69, hsd.Config())) == pytest.approx(0.65)
    assert float(hsd.alpha_schedule(jnp.float32(0.6), 1.0, hsd.Config())) == pytest.approx(0.6)


def test_pinned_skill_warmup_and_epsilon_schedule(episode):
    state, batch, _ = episode
    obs = jax.tree_util.tree_map(lambda x: x[:, 0], batch.obs)  # [T, N, ...]
    pinned = jax.jit(lambda s, o, k: hsd.choose(s, o, k, 0.0, False, 2))(state, obs,
                                                                       jax.random.PRNGKey(0))
    assert np.all(np.asarray(pinned.skill[:, 0]) == 2)
    assert np.any(np.asarray(pinned.skill[:, 1:]) != 2)
    eps = [float(hsd.epsilon(state.replace(episode=jnp.int32(e)))) for e in (0, 1, 2, 26, 500)]
    # episodes 1 and 2 (1-based) are warm-up at eps_start; then -0.45/50 per episode down to 0.05
    np.testing.assert_allclose(eps, [0.5, 0.5, 0.5 - 0.009, 0.5 - 25 * 0.009, 0.05], rtol=1e-6)
    # 4000 copies of one observation at time 0: the batch's first episode (number 1) is warm-up,
    # uniform over 9 actions; the others act eps-greedily with their own eps
    one = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x[0], (4000,) + x.shape[1:]), obs)
    actions = np.asarray(jax.jit(hsd.act)(state, one, jax.random.PRNGKey(1))[0].action[:, 0])
    greedy = np.bincount(actions[1:], minlength=9).argmax()
    assert np.mean(actions[1:] == greedy) > 0.5 and np.all(np.bincount(actions[1:], minlength=9))
    assert actions[0] in range(9)
    # 4000 episodes before the first: every one of the batch is in the warm-up
    uniform = np.asarray(jax.jit(hsd.act)(state.replace(episode=jnp.int32(-4000)), one,
                                          jax.random.PRNGKey(2))[0].action[:, 0])
    np.testing.assert_allclose(np.bincount(uniform, minlength=9) / 4000, 1 / 9, atol=0.025)


def test_eval_metrics_count_outcomes_skills_and_events_per_skill(episode):
    """Win rate from `outcome`, skill shares of agent-steps, and the §6.9 events credited to the
    skill in force (Figs 4.2a, 4.3a), against numpy on the batch."""
    state, batch, _ = episode
    metrics = jax.jit(hsd.eval_metrics)(state, batch)
    skill = np.asarray(batch.action.skill[:37, 0])
    events = np.asarray(batch.info["role_events"][:37, 0])
    expected = np.zeros((4, 8))
    np.add.at(expected, skill.reshape(-1), events.reshape(-1, 8))
    np.testing.assert_allclose(metrics["hsd/skill_events"], expected)
    np.testing.assert_allclose(metrics["hsd/skill_usage"], np.bincount(skill.ravel(), minlength=4) / 111)
    won = float(np.asarray(batch.info["outcome"][:, 0]).sum() > 0)
    assert float(metrics["hsd/win_rate"]) == won and float(metrics["hsd/lose_rate"]) == 1 - won


def test_gradients_of_the_three_losses_match_finite_differences(episode, x64):
    state, _, _ = episode
    nets = ("low_params", "low_target", "high_params", "high_target", "decoder_params")
    state = state.replace(**jax.jit(f64)({k: getattr(state, k) for k in nets}))  # one compile
    rng = np.random.default_rng(3)  # numpy draws: no eager compiles
    b, n = 16, 3
    skills = rng.integers(0, 4, (b, n))
    low = {"obs": rng.normal(size=(b, n, OBS_DIM)), "next_obs": rng.normal(size=(b, n, OBS_DIM)),
           "action": rng.integers(0, 9, (b, n)), "skill": skills, "reward": rng.normal(size=(b, n)),
           "done": (np.arange(b) % 3 == 0) * 1.0}
    mask = (np.arange(b) < 13) * 1.0
    assert_grad_matches_fd(lambda p: hsd.low_loss(p, state, low, mask), state.low_params,
                           jax.random.PRNGKey(4))
    high = {"state": rng.normal(size=(b, 12)), "next_state": rng.normal(size=(b, 12)),
            "obs": low["obs"], "next_obs": low["next_obs"], "skill": skills,
            "reward": rng.normal(size=b), "done": low["done"], "discount": np.full(b, GAMMA)}
    # the mixer's |c H_w1| has kinks within 1e-6 of these small (sigma 0.01) weights
    assert_grad_matches_fd(lambda p: hsd.high_loss(p, state, high, mask), state.high_params,
                           jax.random.PRNGKey(5), h=1e-7)
    x, z = rng.normal(size=(b, 4, 10)), skills[:, 0]
    assert_grad_matches_fd(lambda p: SD.decoder_loss(state.decoder, p, x, z),
                           state.decoder_params, jax.random.PRNGKey(6))


def test_decoder_probabilities_and_learning_on_separable_segments():
    """Probabilities sum to 1; trained on segments whose skill shifts one feature's trend, the
    decoder's mean p(z_true | tau) on fresh segments goes from about 1/K to near 1."""
    k_skills, n = 3, 300
    decoder = SD.SkillDecoder(k_skills, hidden=16)

    rng = np.random.default_rng(0)

    def segments():
        z = rng.integers(0, k_skills, n)
        trend = 0.5 * np.eye(10)[z][:, None, :]  # skill k drifts along feature k
        return (trend + 0.3 * rng.normal(size=(n, 4, 10))).astype(np.float32), z

    x, z = segments()
    x_test, z_test = segments()
    params = jax.jit(decoder.init)(jax.random.PRNGKey(2), x[:1])["params"]
    probs = jax.jit(lambda p: jax.nn.softmax(decoder.apply({"params": p}, x_test)))(params)
    np.testing.assert_allclose(np.sum(np.asarray(probs), -1), 1.0, rtol=1e-6)
    opt = hsd.optax.adam(1e-2)

    @jax.jit
    def train(params):
        def step(carry, _):
            p, o = carry
            g = jax.grad(lambda q: SD.decoder_loss(decoder, q, x, z))(p)
            u, o = opt.update(g, o)
            return (hsd.optax.apply_updates(p, u), o), None
        return jax.lax.scan(step, (params, opt.init(params)), None, 100)[0][0]

    accuracy = jax.jit(lambda p: jnp.mean(SD.skill_probability(decoder, p, x_test, z_test)))
    before, after = float(accuracy(params)), float(accuracy(train(params)))
    assert abs(before - 1 / k_skills) < 0.05 and after > 0.9, (before, after)


def test_skills_become_decodable_end_to_end(world):
    """The whole loop on the stand-in with alpha = 0 (low level on R_I only): the intrinsic reward
    p(z_true | tau) starts at 1/K = 0.25 and, within 200 episodes, rises well above it (measured:
    20-episode means peak at 0.57, 0.86, 0.82 for seeds 10-12; a loop that does not learn stays
    at 0.25)."""
    _, init, rollout, update = world
    state = init(jax.random.PRNGKey(11))
    rewards = []
    for i in range(200):
        batch = rollout(state, jax.random.PRNGKey(11_000 + i))
        state, metrics = update(state, batch)
        rewards.append(float(metrics["hsd/intrinsic_reward"]))
    assert int(state.decoder_steps) == 200 * 12 // 24
    windows = np.mean(np.reshape(rewards, (10, 20)), axis=1)
    assert abs(windows[0] - 0.25) < 0.05 and windows.max() > 0.45, windows


def test_bad_configurations_fail_before_compiling():
    particle, particle_params = jaxmcg.make("particle_antipodal-v0")
    cases = [
        (lambda: hsd.Config(variant="nope").validate(), ["variant='nope'", "hsd_scripted"]),
        (lambda: hsd.Config(variant="hsd_scripted").validate(), ["num_skills=4", "valid: 2"]),
        (lambda: hsd.Config(t_seg=2).validate(), ["t_seg=2", "t_seg > k_skip"]),
        (lambda: hsd.Config(fixed_skill=4).validate(), ["fixed_skill=4", "0..3"]),
        (lambda: hsd.Config(alpha_start=0.5, alpha_end=0.8).validate(), ["alpha_end=0.8"]),
        (lambda: hsd.check_env(particle, particle_params, hsd.Config()),
         ["info['outcome']", "eval_episodes=0"]),
        (lambda: hsd.check_env(ENV, PARAMS, hsd.Config(obs_truncate=13)), ["obs_truncate=13"]),
        (lambda: hsd.check_env(ENV, PARAMS, hsd.Config(buffer_size=39)), ["buffer_size=39"]),
    ]
    for make_it, needles in cases:
        assert_rejected_before_compiling(make_it, needles)
    hsd.check_env(particle, particle_params, hsd.Config(eval_episodes=0))


def test_cli_resolves_hsd_and_rejects_what_it_cannot_play(capsys, tmp_path):
    """`--algo hsd` resolves on sts2 with its variant flags, and an environment without an outcome
    is refused (before compiling) unless the alpha evaluations are off. A CLI training run is in
    test_hsd_slow.py (STS2 compiles for a minute)."""
    from experiments import run

    args = run.build_parser().parse_args(["--algo", "hsd", "--env", "sts2", "--algo-param",
                                          "variant=hsd_ext", "--algo-param", "smdp_exact=true"])
    cfg = run.resolve(args)["algo_config"]
    assert (cfg["variant"], cfg["smdp_exact"], cfg["num_skills"]) == ("hsd_ext", True, 4)
    argv = ["--algo", "hsd", "--env", "particle_antipodal", "--out", str(tmp_path / "r")]
    assert_rejected_before_compiling(lambda: run.resolve(run.build_parser().parse_args(argv)),
                                     ["info['outcome']", "eval_episodes=0"])
    assert run.main(argv) == 2 and "eval_episodes=0" in capsys.readouterr().err
