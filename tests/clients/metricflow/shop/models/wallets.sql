select * from {{ ref('wallets_seed') }}
