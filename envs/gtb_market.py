"""The continuous double auction of Gather-Trade-Build with fixed-size order books (gtb.md §3.4,
§11.5).

The book holds K slots per (resource, agent), exactly the 5-open-order cap of [F], so nothing is
ever dropped: `active`, `is_bid` bool and `price`, `life` int32, each `[R, N, K]` (R = 2: Stone,
Wood; prices 0..10). Inventories and escrows are `[N, 3]` float32 with columns (coin, stone, wood).
Everything here is a pure function of arrays; N and K come from the shapes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

NUM_RESOURCES = 2  # Stone, Wood: the commodities in sorted order ([F] `continuous_double_auction.py`)
NUM_PRICES = 11  # integer prices 0..10 ([F] `max_bid_ask=10`, `price_floor=0`)
FIRST_TRADE_ACTION = 2  # single-action index of "Buy Stone at 0" (gtb.md §3.2)
NUM_TRADE_ACTIONS = 2 * NUM_RESOURCES * NUM_PRICES  # 44: {Stone, Wood} x {buy, sell} x 11 prices


@struct.dataclass
class OrderBook:
    active: jax.Array  # [R, N, K] bool
    is_bid: jax.Array  # [R, N, K] bool
    price: jax.Array  # [R, N, K] int32
    life: jax.Array  # [R, N, K] int32: steps survived (0 while the creation step is matched)


def empty_book(num_agents: int, max_orders: int) -> OrderBook:
    shape = (NUM_RESOURCES, num_agents, max_orders)
    return OrderBook(
        active=jnp.zeros(shape, jnp.bool_),
        is_bid=jnp.zeros(shape, jnp.bool_),
        price=jnp.zeros(shape, jnp.int32),
        life=jnp.zeros(shape, jnp.int32),
    )


def decode_trade(actions):
    """Single-action indices `[N]` -> (is_order, resource, is_bid, price), each `[N]` (gtb.md §3.2:
    2-12 buy Stone, 13-23 sell Stone, 24-34 buy Wood, 35-45 sell Wood, price = offset in the block)."""
    j = actions - FIRST_TRADE_ACTION
    is_order = (j >= 0) & (j < NUM_TRADE_ACTIONS)
    j = jnp.clip(j, 0, NUM_TRADE_ACTIONS - 1)
    block = j // NUM_PRICES
    return is_order, block // 2, block % 2 == 0, j % NUM_PRICES


def create_orders(book, inv, esc, labor, actions, order_labor):
    """Order creation (gtb.md §3.4.2). A bid at p needs < K open orders in that resource and
    inventory coin >= p, and moves p coin to escrow; an ask needs < K open orders and one unit in
    inventory, and moves it to escrow. Each accepted order costs `order_labor`; a rejected one
    changes nothing. Returns (book, inv, esc, labor, placed [N] bool)."""
    r_n, n, k = book.active.shape
    is_order, res, bid, price = decode_trade(actions)
    onehot_r = jax.nn.one_hot(res, r_n, dtype=jnp.bool_) & is_order[:, None]  # [N, R]
    active = jnp.swapaxes(book.active, 0, 1)  # [N, R, K]
    open_r = jnp.sum(jnp.where(onehot_r[:, :, None], active, False), axis=(1, 2))  # [N]
    agents = jnp.arange(n)
    has_unit = inv[agents, res + 1] >= 1
    ok = is_order & (open_r < k) & jnp.where(bid, inv[:, 0] >= price, has_unit)
    free = jnp.argmin(active[agents, res], axis=-1)  # first free slot of that resource
    new = onehot_r[:, :, None] & jax.nn.one_hot(free, k, dtype=jnp.bool_)[:, None, :] & ok[:, None, None]
    new = jnp.swapaxes(new, 0, 1)  # [R, N, K]
    book = OrderBook(
        active=book.active | new,
        is_bid=jnp.where(new, bid[None, :, None], book.is_bid),
        price=jnp.where(new, price[None, :, None], book.price),
        life=jnp.where(new, 0, book.life),
    )
    okf = ok.astype(inv.dtype)
    coin = jnp.where(bid, price, 0).astype(inv.dtype) * okf
    unit = jax.nn.one_hot(res + 1, 3, dtype=inv.dtype) * (okf * ~bid)[:, None]
    delta = unit.at[:, 0].add(coin)
    return book, inv - delta, esc + delta, labor + order_labor * okf, ok


def match_resource(active, is_bid, price, life, max_life):
    """Matches of one resource's book `[N, K]` (gtb.md §11.5): N rounds of "the highest-priority bid
    that has an affordable ask of another owner trades with the best such ask". Bids rank by (price
    desc, life desc, owner asc), asks by (price asc, life desc, owner asc). With at most one new order
    per agent per step and no executable pair left from the previous step, there are at most N
    trades, and this equals [F]'s mark-impossible loop (§11.5 lemmas). Returns (bid_slot [N],
    ask_slot [N], go [N] bool) as flat slot indices owner*K + k."""
    n, k = active.shape
    owner = jnp.repeat(jnp.arange(n), k)
    active, is_bid, price, life = (x.reshape(-1) for x in (active, is_bid, price, life))
    big = jnp.int32(1 << 20)
    span = (max_life + 1) * n
    bid_key = price * span + life * n + (n - 1 - owner)
    ask_key = price * span + (max_life - life) * n + owner
    others = ~jnp.eye(n, dtype=jnp.bool_)
    records = []
    for _ in range(n):
        ask_on = active & ~is_bid
        cheapest = jnp.min(jnp.where(ask_on, price, big).reshape(n, k), axis=1)  # per owner
        cheapest_other = jnp.min(jnp.where(others, cheapest[None, :], big), axis=1)
        tradeable = active & is_bid & (price >= cheapest_other[owner])
        b = jnp.argmax(jnp.where(tradeable, bid_key, -1))
        go = jnp.any(tradeable)
        a = jnp.argmin(jnp.where(ask_on & (owner != owner[b]), ask_key, big))
        active = active & ~((jnp.arange(n * k) == b) & go) & ~((jnp.arange(n * k) == a) & go)
        records.append((b, a, go))
    b, a, go = (jnp.stack(x) for x in zip(*records))
    return b, a, go


def match_and_settle(book, inv, esc, price_hist, max_life):
    """Matching of both resources (independent, gtb.md §3.4.3), then settlement once after the loop
    (§11.5: settling inside the loop doubled the cost). A trade is priced at the ask when bid life <=
    ask life (the ask was earlier or both are new, G18), else at the bid. The buyer's escrow loses the
    bid, its inventory gains the unit and the refund bid - price; the seller's escrowed unit goes and
    it gains the price; `price_hist[r, seller, price] += 1`.

    Returns (book, inv, esc, price_hist, trades [R] int32, trade_income [N] float32 = coin received
    from sales minus coin paid for purchases)."""
    r_n, n, k = book.active.shape
    b, a, go = jax.vmap(match_resource, in_axes=(0, 0, 0, 0, None))(
        book.active, book.is_bid, book.price, book.life, max_life)  # each [R, T]
    flat = lambda x: x.reshape(r_n, n * k)  # noqa: E731
    take = lambda x, i: jnp.take_along_axis(flat(x), i, axis=1)  # noqa: E731
    bid_p, ask_p = take(book.price, b), take(book.price, a)
    price = jnp.where(take(book.life, b) <= take(book.life, a), ask_p, bid_p)  # [R, T]
    gof = go.astype(inv.dtype)
    buyer = jax.nn.one_hot(b // k, n, dtype=inv.dtype) * gof[..., None]  # [R, T, N]
    seller = jax.nn.one_hot(a // k, n, dtype=inv.dtype) * gof[..., None]
    bid_f, price_f = bid_p.astype(inv.dtype), price.astype(inv.dtype)
    paid = jnp.einsum("rtn,rt->n", buyer, price_f)
    received = jnp.einsum("rtn,rt->n", seller, price_f)
    esc_coin = jnp.einsum("rtn,rt->n", buyer, bid_f)
    bought, sold = buyer.sum(1).T, seller.sum(1).T  # [N, R]
    inv = inv.at[:, 0].add(esc_coin - paid + received).at[:, 1:].add(bought)
    esc = esc.at[:, 0].add(-esc_coin).at[:, 1:].add(-sold)
    price_hist = price_hist + jnp.einsum(
        "rtn,rtp->rnp", seller, jax.nn.one_hot(price, price_hist.shape[-1], dtype=inv.dtype))
    used = jnp.zeros((r_n, n * k), jnp.bool_)
    slots = jnp.arange(n * k)
    used = used | jnp.any((slots[None, None, :] == b[..., None]) & go[..., None], axis=1)
    used = used | jnp.any((slots[None, None, :] == a[..., None]) & go[..., None], axis=1)
    book = book.replace(active=book.active & ~used.reshape(r_n, n, k))
    return book, inv, esc, price_hist, go.sum(1).astype(jnp.int32), received - paid


def expire_orders(book, inv, esc, duration):
    """Expiry (gtb.md §3.4.4): every open order's life += 1; orders with life > `duration` are
    removed and their escrow (bid coin or one unit) returns to inventory. Returns (book, inv, esc)."""
    life = jnp.where(book.active, book.life + 1, book.life)
    gone = book.active & (life > duration)
    coin = jnp.sum(jnp.where(gone & book.is_bid, book.price, 0), axis=(0, 2)).astype(inv.dtype)
    units = jnp.sum(gone & ~book.is_bid, axis=2).T.astype(inv.dtype)  # [N, R]
    back = jnp.concatenate([coin[:, None], units], axis=1)
    return book.replace(active=book.active & ~gone, life=life), inv + back, esc - back


def histograms(book):
    """Open orders per price: (bids, asks), each `[R, N, 11]` float32."""
    at = book.price[..., None] == jnp.arange(NUM_PRICES)  # [R, N, K, P]
    bids = jnp.sum(at & (book.active & book.is_bid)[..., None], axis=2, dtype=jnp.float32)
    asks = jnp.sum(at & (book.active & ~book.is_bid)[..., None], axis=2, dtype=jnp.float32)
    return bids, asks


def market_rate(price_hist):
    """Sum_p p h_p / max(0.001, sum_p h_p) per resource with h summed over sellers: `[R]` ([F]
    `generate_observations`)."""
    h = jnp.sum(price_hist, axis=1)  # [R, P]
    prices = jnp.arange(h.shape[-1], dtype=h.dtype)
    return (h @ prices) / jnp.maximum(0.001, jnp.sum(h, axis=-1))
