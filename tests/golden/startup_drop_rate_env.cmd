CHAOS_DROP_RATE=0.5 ./main.py
