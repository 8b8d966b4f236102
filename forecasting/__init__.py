"""Pipeline analytics and revenue forecasting: metrics, a learned stage model, stuck deals, Monte Carlo ranges.

Every function here is pure: data in, numbers out, randomness only through an explicit numpy Generator.
"""
