"""Environment families, registered by versioned id on import."""
from jaxmcg.registry import register_env

register_env("escape_room-v0", "envs.escape_room:EscapeRoom")
register_env("escape_room_asym-v0", "envs.escape_room_asym:EscapeRoomAsym")

# Iterated 2-player matrix games; `payoff` names a table in envs/matrix_games.py (with its source),
# so this package stays import-light.
_MG = "envs.matrix_games:MatrixGame"
register_env("matrix_game-v0", _MG)  # general; default payoffs = IPD, 5 rounds
register_env("ipd-v0", _MG, payoff="ipd", max_steps_in_episode=5)  # thesis §5.3
register_env("stag_hunt-v0", _MG, payoff="stag_hunt", max_steps_in_episode=5)  # dcl.md §3.6
register_env("chicken-v0", _MG, payoff="chicken", max_steps_in_episode=5)  # textbook values
# DCL's games (dcl.md §3.1–§3.4), named as its CLI names them (`--env pd`, `--env rpc`); the matrix
# games observe the constant dummy state [1, 0]
register_env("pd-v0", _MG, payoff="ipd", max_steps_in_episode=1, observation="dummy")
register_env("rpc-v0", _MG, payoff="conflict", max_steps_in_episode=16, observation="dummy")
register_env("grid_game-v0", "envs.grid_game:GridGame")
register_env("public_goods-v0", "envs.public_goods:PublicGoods")
register_env("cleanup-7x7-v0", "envs.cleanup:Cleanup", map_name="7x7")  # thesis §5.4
register_env("cleanup-10x10-v0", "envs.cleanup:Cleanup", map_name="10x10")
# D3C's differentiable games (d3c.md §2.1-2.3): `losses(x, params) -> [n]`, not Markov games
register_env("braess-v0", "envs.braess:Braess")
register_env("convex_pd-v0", "envs.convex_pd:ConvexPD")
register_env("nash_paradox-v0", "envs.analytic_games:NashParadox")
register_env("efficient_unfair-v0", "envs.analytic_games:EfficientUnfair")
register_env("election-v0", "envs.analytic_games:Election")
# The MGE paper's tabular games (mge.md §2.1-§2.5), jaxmcg.tabular.TabularEnv subclasses
register_env("pursuit-2-v0", "envs.pursuit:Pursuit2")
register_env("pursuit-3-v0", "envs.pursuit:Pursuit3")
register_env("rabbit_hole-v0", "envs.rabbit_hole:RabbitHole")
register_env("hw_grid1-v0", "envs.hw_grid:HWGrid", game=1)
register_env("hw_grid2-v0", "envs.hw_grid:HWGrid", game=2)
# D3C's Coins (d3c.md §2.5), the LOLA coin game and Trust-Your-Brother (d3c.md §2.4)
register_env("coins-v0", "envs.coins:Coins")
register_env("coin_game-v0", "envs.coins:CoinGame")
register_env("trust_your_brother-v0", "envs.trust_your_brother:TrustYourBrother")
register_env("driving_junction-v0", "envs.driving_junction:DrivingJunction")  # mge.md §2.6
register_env("harvest_patch-v0", "envs.harvest_patch:HarvestPatch")  # d3c.md §2.8 (McKee et al. 2020)
register_env("gtb-15x15-v0", "envs.gtb:GTB")  # thesis ch. 6 Gather-Trade-Build (gtb.md)
# CM3's cooperative multi-goal environments (cm3-hsd.md §4); Stage-1 variants have one agent
register_env("checkers-v0", "envs.checkers:Checkers")
register_env("checkers_stage1-v0", "envs.checkers:Checkers", num_agents=1)
register_env("particle_antipodal-v0", "envs.particle_nav:ParticleNav", scenario="antipodal")
register_env("particle_intersection-v0", "envs.particle_nav:ParticleNav", scenario="intersection")
register_env("particle_merge-v0", "envs.particle_nav:ParticleNav", scenario="merge")
register_env("particle_stage1-v0", "envs.particle_nav:ParticleNav", scenario="random")
register_env("lane_merge-v0", "envs.lane_merge:LaneMerge")  # SUMO merge stand-in (cm3-hsd.md §4.3.2)
register_env("lane_merge_stage1-v0", "envs.lane_merge:LaneMerge", num_agents=1)
register_env("sts2-v0", "envs.sts2:STS2")  # HSD's 3v3 vs the scripted team (cm3-hsd.md §6)
