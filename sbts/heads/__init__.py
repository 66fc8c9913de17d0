"""What a network's last-step output means, for the tasks that read one window per step (numpy only).

``anomaly``: reconstruction scores of every step and a stream of them; ``forecasting``: the windows'
preparation and the forecasts. Training (``sbts.tasks``) and the torch-free runtime (``sbts.runtime``)
both build their inputs and read their outputs here, so the two cannot drift apart.
"""
