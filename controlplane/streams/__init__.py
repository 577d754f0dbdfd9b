"""Binance-compatible WebSocket market streams: stream names (:mod:`.names`), candles and
rolling 24-hour statistics (:mod:`.candles`) and the hub that turns the event feed into
frames and fans them out to connections (:mod:`.hub`). The HTTP side (routes, the control
protocol) is :mod:`controlplane.api.streams`.
"""
